"""The index folder: plain files, one atomic pointer.

    manifest.json          format version, model config + fingerprint, dim, count, times, and the
                           names of the current data files (the only file ever overwritten,
                           always by atomic rename)
    vectors-NNNNNN.faiss   FAISS IndexIDMap2 over inner product of L2-normalised vectors
    docs-NNNNNN.parquet    one row per document: vid (the FAISS id), id, path, title, n_tokens,
                           truncated, sha256, size, mtime, text
    pending/               encoded-but-not-yet-committed shards of an interrupted run
    GEMMA_NOTICE.txt       licence notice of the backbone, when it requires one

A write builds the next version's files beside the current ones and then replaces
manifest.json, so a crash at any moment leaves the last good version searchable.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DOC_COLUMNS = ["vid", "id", "path", "title", "n_tokens", "truncated", "sha256", "size", "mtime", "text"]


class IndexFolderError(Exception):
    """An index folder that cannot be used; the message names the file and the problem."""


@dataclass
class Snapshot:
    folder: Path
    manifest: dict
    index: faiss.Index
    docs: pa.Table

    @property
    def count(self) -> int:
        return self.docs.num_rows


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IndexFolderError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFolderError(f"{path}: not a longretr index manifest of format {FORMAT_VERSION}")
    return manifest


def load(folder: Path | str) -> Snapshot:
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise IndexFolderError(f"{folder}: no index here ({MANIFEST} missing); build one with `longretr index`")
    vec_path, docs_path = folder / manifest["files"]["vectors"], folder / manifest["files"]["docs"]
    try:
        index = faiss.read_index(str(vec_path))
    except Exception as e:
        raise IndexFolderError(f"{vec_path}: truncated or not a FAISS index ({e})") from e
    try:
        docs = pq.read_table(docs_path)
    except Exception as e:
        raise IndexFolderError(f"{docs_path}: corrupt or unreadable docs table ({e})") from e
    if set(DOC_COLUMNS) - set(docs.column_names):
        raise IndexFolderError(f"{docs_path}: missing columns {sorted(set(DOC_COLUMNS) - set(docs.column_names))}")
    if index.ntotal != docs.num_rows or index.d != manifest["dim"]:
        raise IndexFolderError(
            f"{vec_path}: holds {index.ntotal} vectors of dim {index.d}, but {docs_path.name} has "
            f"{docs.num_rows} rows and the manifest says dim {manifest['dim']}"
        )
    return Snapshot(folder, manifest, index, docs)


def empty_index(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def commit(folder: Path, manifest: dict, index: faiss.Index, docs: pa.Table) -> dict:
    """Write a new version and switch the manifest to it; remove files two versions old."""
    folder.mkdir(parents=True, exist_ok=True)
    old = read_manifest(folder)
    version = (old or {}).get("version", 0) + 1
    files = {"vectors": f"vectors-{version:06d}.faiss", "docs": f"docs-{version:06d}.parquet"}
    atomic_write_bytes(folder / files["vectors"], faiss.serialize_index(index).tobytes())
    sink = pa.BufferOutputStream()
    pq.write_table(docs.select(DOC_COLUMNS), sink)
    atomic_write_bytes(folder / files["docs"], sink.getvalue().to_pybytes())
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "version": version,
        "files": files,
        "count": docs.num_rows,
        "created": (old or {}).get("created", now),
        "updated": now,
    }
    atomic_write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2).encode())
    keep = set(files.values()) | set((old or {}).get("files", {}).values())  # readers may hold the previous one
    for path in list(folder.glob("vectors-*.faiss")) + list(folder.glob("docs-*.parquet")):
        if path.name not in keep:
            path.unlink(missing_ok=True)
    return manifest


@contextmanager
def writer_lock(folder: Path):
    """One writer per index folder; a second one fails at once with a clear message."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise IndexFolderError(f"{folder}: another `longretr` process is writing this index") from e
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def empty_docs() -> pa.Table:
    schema = pa.schema([
        ("vid", pa.int64()), ("id", pa.string()), ("path", pa.string()), ("title", pa.string()),
        ("n_tokens", pa.int64()), ("truncated", pa.bool_()), ("sha256", pa.string()), ("size", pa.int64()),
        ("mtime", pa.float64()), ("text", pa.string()),
    ])
    return schema.empty_table()


def vectors_for(index: faiss.Index, vids: np.ndarray) -> np.ndarray:
    return np.stack([index.reconstruct(int(v)) for v in vids]) if len(vids) else np.zeros((0, index.d), "float32")
