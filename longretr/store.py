"""The index folder: plain files, one atomic pointer.

    manifest.json          format version, model config + fingerprint, dim, count, times, and the
                           names of the current data files (the only file ever overwritten,
                           always by atomic rename)
    vectors-NNNNNN.faiss   FAISS IndexIDMap2(IndexFlatIP) of L2-normalised vectors: the source of truth; a
                           document's vector has id vid, its j-th other vector (its lead's, then its spans',
                           for model configs with lead_tokens or span_tokens) 2**62 + j * 2**40 + vid
    ann-NNNNNN.faiss       the same vectors in the configured search index type (IVF, HNSW, ...),
                           rebuilt from vectors-NNNNNN at each commit; absent for flat search
    lexical-NNNNNN/        BM25 term counts of the text column (see lexical.py)
    docs-NNNNNN.parquet    one row per document: vid (the FAISS id), id, path, title, n_tokens,
                           truncated, sha256, size, mtime, text
    pending/               encoded-but-not-yet-committed shards of an interrupted run
    GEMMA_NOTICE.txt       licence notice of the backbone, when it requires one
    .lock                  held (flock) by the one writer, holds its pid

A write builds the next version's files beside the current ones and then replaces
manifest.json, so a crash at any moment leaves the last good version searchable. Data files are
never changed once named by a manifest; the previous version's stay for readers that hold it, and
a reader that loses a race with two commits in a row reloads the newer manifest.
"""

from __future__ import annotations

import difflib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import index_types
from .atomic import atomic_write, atomic_write_bytes
from .fusion import ranking_config
from .lexical import LexicalIndex, LexicalIndexError
from .queries import encodes, nfc

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LOAD_ATTEMPTS = 5
EXTRA_ID = 1 << 62  # a document's j-th other vector has FAISS id EXTRA_ID + j * EXTRA_STEP + vid
EXTRA_STEP = 1 << 40  # vids stay below it (so a lone lead, j = 0, keeps the id it had before spans existed)
VID_MASK = EXTRA_STEP - 1  # any vector's id & VID_MASK is its document's vid
DOC_COLUMNS = ["vid", "id", "path", "title", "n_tokens", "truncated", "sha256", "size", "mtime", "text"]
# [start, end) characters of the text behind each of a document's other vectors, in the order of j (EXTRA_ID); empty
# for a document without them, null where not known yet (an index built before passages: search shows none)
PASSAGES = pa.field("passages", pa.list_(pa.list_(pa.int64(), 2)))


class IndexFolderError(Exception):
    """An index folder that cannot be used; the message names the file and the problem."""


@dataclass
class Snapshot:
    folder: Path
    manifest: dict
    index: faiss.Index  # flat IndexIDMap2: every vector, by vid (other vectors: see EXTRA_ID)
    docs: pa.Table
    lexical: LexicalIndex | None = None  # None when not loaded, or for an index built before it existed
    ann: faiss.Index | None = None  # the configured non-flat search index, when there is one
    # lexical or ann files that could not be read, by kind: their messages. Readers go on without them (dense search
    # without the ann is exact over the flat vectors); writers rebuild both, so re-indexing repairs them.
    damaged: dict[str, str] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.docs.num_rows

    @property
    def search_index(self) -> faiss.Index:
        return self.ann if self.ann is not None else self.index


def _discard(*paths: Path) -> None:
    """Remove files or folders, best effort: a failed write's leftovers (a full disk must not stay fuller), or old
    versions; an error here must not hide the one being reported, nor fail a commit that is done."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with suppress(OSError):
                path.unlink(missing_ok=True)


@contextmanager
def writing(folder: Path, *leftovers: Path) -> Iterator[None]:
    """A failed write (a full disk, a read-only or failing drive) as one line: the file, the OS's reason and what the
    index still holds. `leftovers`, the failed attempt's files, are removed first. The manifest is only ever replaced
    whole, so the last good version is intact."""
    try:
        yield
    except BaseException as e:  # an interrupted write's files go too, unless its manifest was already in place
        try:
            named = set(((read_manifest(folder) or {}).get("files") or {}).values())
        except IndexFolderError:
            named = set()
        _discard(*(p for p in leftovers if p.name not in named))
        if not isinstance(e, OSError):
            raise
        raise IndexFolderError(f"{e.filename or folder}: cannot write ({e.strerror or e}); {_holds(folder)}") from e


def _holds(folder: Path) -> str:
    try:
        manifest = read_manifest(folder)
    except IndexFolderError:
        manifest = None
    if manifest is None:
        return f"no index was written to {folder}"
    return f"{folder} is unchanged (version {manifest.get('version')}, {manifest.get('count')} documents)"


def read_manifest(folder: Path) -> dict | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFolderError(f"{path}: unreadable manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise IndexFolderError(f"{path}: not a longretr index manifest of format {FORMAT_VERSION}")
    return manifest


class NoDocument(LookupError):
    """No document with that id in the index; the message names close ids."""


def document(snapshot: Snapshot, doc_id: str, start: int | None = None, end: int | None = None) -> dict:
    """A document by id: id, path, title, n_tokens, truncated, and its indexed text (what search, snippets and passage
    offsets refer to: for HTML and PDF the extracted text, not the file), or characters [start, end) of it."""
    return _document(snapshot.folder, snapshot.docs, doc_id, start, end)


def _document(folder: Path, docs: pa.Table, doc_id: str, start: int | None, end: int | None) -> dict:
    row = _document_row(folder, docs, doc_id)
    length = len(row["text"])
    lo, hi = 0 if start is None else start, length if end is None else min(end, length)  # an end past it: to the end
    if lo < 0 or lo > hi or (lo == hi and length):  # a bound left out is shown as the one used, not as None
        raise ValueError(f"characters {lo:,}-{length if end is None else end:,}: not a range inside {doc_id!r} "
                         f"({length:,} characters)")
    return {**{k: row[k] for k in ("id", "path", "title", "n_tokens", "truncated")},
            "length": length, "start": lo, "end": hi, "text": row["text"][lo:hi]}


def read_document(folder: Path | str, doc_id: str, start: int | None = None, end: int | None = None) -> dict:
    """`document` read from the folder without loading the index: only the docs table, not the vectors (`longretr
    show`; a large index's vectors are gigabytes, read and checked to print one passage)."""
    folder = Path(folder)
    return _document(folder, _current(folder, lambda manifest: _read_docs(_docs_path(folder, manifest))), doc_id,
                     start, end)


def _docs_path(folder: Path, manifest: dict) -> Path:
    """The docs table a manifest names (readers of the docs table alone: show, info)."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(files.get("docs"), str):
        raise IndexFolderError(f"{folder / MANIFEST}: names no docs file; not a longretr index")
    return folder / files["docs"]


def describe(folder: Path | str) -> dict:
    """What an index holds, from its manifest and the docs table's small columns (not the text, not the vectors):
    `longretr info`."""
    folder = Path(folder)

    def read(manifest: dict) -> dict:
        docs_path, files = _docs_path(folder, manifest), manifest["files"]
        odd = next((f"{k}: {v!r}" for k, v in files.items() if not isinstance(v, str) or not v), None)
        if odd:  # each file is read or sized below
            raise IndexFolderError(f"{folder / MANIFEST}: names a file by other than a file name ({odd}); not a "
                                   "longretr index")
        docs = _small_columns(docs_path)
        model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
        passages = docs.column(PASSAGES.name) if PASSAGES.name in docs.column_names else None
        return {
            "folder": str(folder), "version": manifest.get("version"), "documents": docs.num_rows,
            "tokens": pc.sum(docs.column("n_tokens")).as_py() or 0,
            "longest": pc.max(docs.column("n_tokens")).as_py() or 0,
            "truncated": int(pc.sum(docs.column("truncated")).as_py() or 0),
            "windowed": int(pc.sum(pc.greater(docs.column("n_tokens"), model["max_tokens"])).as_py() or 0)
            if isinstance(model.get("max_tokens"), int) else None,  # longer than one pass, so in windows
            # a document's lead and span vectors; None where an older index did not record them
            "other_vectors": None if passages is None or passages.null_count else
            int(pc.sum(pc.list_value_length(passages)).as_py() or 0),
            "model": model.get("name"), "model_fingerprint": manifest.get("model_fingerprint"),
            "max_tokens": model.get("max_tokens"), "dim": manifest.get("dim"),
            "index_type": manifest.get("index_type"), "ranking": manifest_ranking(folder, manifest),
            "created": manifest.get("created"), "updated": manifest.get("updated"),
            "bytes": sum(_size(folder / name) for name in [MANIFEST, *files.values()]),
            "pending_shards": len(pending_shards(folder)),
        }

    return _current(folder, read)


def manifest_ranking(folder: Path, manifest: dict) -> dict:
    """The manifest's search defaults as search uses them: the defaults for what it lacks, checked."""
    try:
        return ranking_config(manifest.get("ranking"))
    except ValueError as e:  # a hand-edited manifest, or one an older longretr let through (rrf_k inf)
        raise IndexFolderError(f"{folder / MANIFEST}: bad ranking settings ({e}); set them with "
                               "`longretr index --mode/--fusion/--weight/--rrf-k`") from e


# the docs table's columns `describe` reads, and the types it sums them as
SMALL_COLUMNS = {"n_tokens": pa.types.is_integer, "truncated": pa.types.is_boolean, PASSAGES.name: pa.types.is_list}


def _small_columns(path: Path) -> pa.Table:
    """The docs table's SMALL_COLUMNS (passages only where an index has them), checked: a damaged or hand-edited
    table is one line naming it, not a traceback or a wrong sum (strings of digits would be joined, not added)."""
    _named(path)  # outside the try: its own error is the message
    try:
        names = pq.read_schema(path).names
        docs = pq.read_table(path, columns=[name for name in SMALL_COLUMNS if name in names])
    except Exception as e:
        raise IndexFolderError(f"{path}: corrupt or unreadable docs table ({_first_line(e)})") from e
    missing = sorted({"n_tokens", "truncated"} - set(docs.column_names))
    if missing:
        raise IndexFolderError(f"{path}: missing columns {missing}")
    wrong = [f"{f.name} is {f.type}" for f in docs.schema if not SMALL_COLUMNS[f.name](f.type)]
    if docs.column("n_tokens").null_count:
        wrong.append(f"n_tokens has no value in {docs.column('n_tokens').null_count} of {docs.num_rows} rows")
    if wrong:
        raise IndexFolderError(f"{path}: damaged docs table ({'; '.join(wrong)})")
    return docs


def pending_shards(folder: Path) -> list[Path]:
    """Shards of encoded vectors not committed yet, any model's (indexer.py writes them)."""
    try:
        return list(Path(folder).glob("pending/*/shard-*.npz"))
    except OSError:  # a writer's commit removed pending/ while it was listed: its shards are committed now
        return []


def _first_line(error: Exception) -> str:
    """An error's first line (arrow's may go on to list a whole schema)."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _size(path: Path) -> int:
    """Bytes in a file, or in a folder's files; what a writer removed meanwhile counts 0."""
    total = 0
    with suppress(OSError):
        for p in path.rglob("*") if path.is_dir() else [path]:
            with suppress(OSError):
                total += p.stat().st_size if p.is_file() else 0
    return total


def _document_row(folder: Path, docs: pa.Table, doc_id: str) -> dict:
    """The docs table's row for `doc_id`; else NoDocument naming close ids."""
    if not isinstance(doc_id, str):
        raise TypeError(f"a document id is a str, got {type(doc_id).__name__}")
    rows = match_ids(docs, [doc_id]).get(doc_id, [])
    if len(rows) > 1:
        raise NoDocument(f"{folder}: {doc_id!r} matches {len(rows)} ids that differ only in their Unicode form; "
                         "give one exactly, as `longretr search --json` prints it")
    if not rows:
        raise NoDocument(f"{folder}: no document {doc_id!r}{did_you_mean(docs, doc_id)}")
    return docs.slice(rows[0], 1).to_pylist()[0]


SUGGEST_MAX_IDS = 20_000  # difflib over all ids: 8 ms for 300, 3 s for 100,000 (a server answers each 404 so)


def did_you_mean(docs: pa.Table, doc_id: str) -> str:
    """"; did you mean 'a.txt', 'b.txt'?" for up to three ids like `doc_id`, or "" (also for an index of more than
    SUGGEST_MAX_IDS documents)."""
    if docs.num_rows > SUGGEST_MAX_IDS:
        return ""
    close = difflib.get_close_matches(doc_id, docs.column("id").to_pylist(), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def match_ids(docs: pa.Table, wanted: list[str]) -> dict[str, list[int]]:
    """The rows of the docs table whose id is each wanted one (those matching nothing are left out): the row of that
    exact id, else those equal to it in NFC (queries.nfc: a decomposed file name from macOS, a composed one typed)."""
    column = docs.column("id")
    wanted = [w for w in dict.fromkeys(wanted) if encodes(w)]  # undecodable bytes (lone surrogates): in no id
    found = _rows_by_value(column, wanted)
    rest = [w for w in wanted if w not in found]
    if rest:
        normal = _rows_by_value(pc.utf8_normalize(column, "NFC"), [nfc(w) for w in rest])
        found |= {w: normal[nfc(w)] for w in rest if nfc(w) in normal}
    return found


def _rows_by_value(values: pa.ChunkedArray, wanted: list[str]) -> dict[str, list[int]]:
    rows = pc.indices_nonzero(pc.is_in(values, value_set=pa.array(wanted, pa.string())))
    out: dict[str, list[int]] = {}
    for row, value in zip(rows.to_pylist(), pc.take(values, rows).to_pylist()):
        out.setdefault(value, []).append(row)
    return out


def no_index(folder: Path | str) -> IndexFolderError:
    """"No index here", naming the indexes beside it: after `make demo` built indexes/demo, a plain `longretr search`
    looks in indexes/default."""
    folder = Path(folder)
    if folder.is_file():  # --index naming a file, e.g. the manifest itself
        hint = f"; the index is the folder {folder.parent}" if folder.name == MANIFEST else ""
        return IndexFolderError(f"{folder}: a file, not an index folder{hint}")
    shards = len(pending_shards(folder)) if folder.is_dir() else 0
    if shards:  # the first run of `longretr index` was interrupted, or is still going: say that its work is kept
        return IndexFolderError(f"{folder}: no index yet ({MANIFEST} missing): a first `longretr index` run, "
                                f"interrupted or still going, has {shards} shard{'s' * (shards != 1)} of encoded "
                                "vectors in pending/; if it was interrupted, run it again to finish the index")
    near = sorted(str(p.parent) for p in folder.parent.glob(f"*/{MANIFEST}")) if folder.parent.is_dir() else []
    hint = f"; beside it: {', '.join(near[:5])}{' ...' if len(near) > 5 else ''} (choose with --index)" if near else ""
    return IndexFolderError(f"{folder}: no index here ({MANIFEST} missing); build one with `longretr index`{hint}")


def load(folder: Path | str, lexical: bool = True, ann: bool = True) -> Snapshot:
    """The current version. Writers pass lexical=False, ann=False: they rebuild both from the
    vectors and the docs table, so a damaged lexical or ann file is repaired by re-indexing. A damaged one is left
    out and named in `damaged`, so what the vectors and docs alone can do still works."""
    folder = Path(folder)

    def read(manifest: dict) -> Snapshot:
        snap = _load_version(folder, manifest, lexical, ann)
        newer = read_manifest(folder) if snap.damaged else None
        if newer is not None and newer.get("version") != manifest.get("version"):
            raise IndexFolderError(next(iter(snap.damaged.values())))  # a writer removed them: read its version
        return snap

    return _current(folder, read)


def _current(folder: Path, read):
    """read(manifest) of the current version. A writer may have committed twice since we read the manifest and removed
    its files: they are never changed in place, so a newer manifest means a newer complete version to read instead."""
    for attempt in range(LOAD_ATTEMPTS):
        manifest = read_manifest(folder)
        if manifest is None:
            raise no_index(folder)
        try:
            return read(manifest)
        except IndexFolderError:
            newer = read_manifest(folder)
            if attempt + 1 < LOAD_ATTEMPTS and newer is not None and newer.get("version") != manifest.get("version"):
                continue
            raise
    raise AssertionError("unreachable")


def _named(path: Path) -> None:
    """A file the manifest names must exist: one line naming it, not the reader library's error."""
    if not path.is_file():
        raise IndexFolderError(f"{path}: missing (named by {MANIFEST})")


def _read_docs(path: Path) -> pa.Table:
    _named(path)
    try:
        docs = pq.read_table(path)
    except Exception as e:
        raise IndexFolderError(f"{path}: corrupt or unreadable docs table ({e})") from e
    if set(DOC_COLUMNS) - set(docs.column_names):
        raise IndexFolderError(f"{path}: missing columns {sorted(set(DOC_COLUMNS) - set(docs.column_names))}")
    return docs


def _load_version(folder: Path, manifest: dict, want_lexical: bool, want_ann: bool) -> Snapshot:
    files = manifest.get("files")
    if not isinstance(files, dict) or not {"vectors", "docs"} <= set(files) or \
            not {"dim", "model_fingerprint"} <= set(manifest):  # readers and writers use all of these
        raise IndexFolderError(f"{folder / MANIFEST}: names no vectors/docs files, no dim or no model fingerprint; "
                               "not a longretr index")
    vec_path, docs_path = folder / files["vectors"], folder / files["docs"]
    index = _read_faiss(vec_path)
    if not isinstance(index, faiss.IndexIDMap2) or not isinstance(faiss.downcast_index(index.index), faiss.IndexFlat):
        raise IndexFolderError(f"{vec_path}: a FAISS {type(index).__name__}, not the IndexIDMap2(IndexFlat) "
                               "longretr writes; this file was not written by longretr")
    docs = _read_docs(docs_path)
    ids = faiss.vector_to_array(index.id_map)
    doc_ids, extra_ids = ids[ids < EXTRA_ID], ids[ids >= EXTRA_ID]
    if len(doc_ids) != docs.num_rows or index.d != manifest["dim"]:
        raise IndexFolderError(
            f"{vec_path}: holds {len(doc_ids)} document vectors of dim {index.d}, but {docs_path.name} "
            f"has {docs.num_rows} rows and the manifest says dim {manifest['dim']}"
        )
    vids = docs.column("vid").to_numpy()
    if not np.array_equal(np.sort(doc_ids), np.sort(vids)) or not np.isin(extra_ids & VID_MASK, vids).all():
        raise IndexFolderError(f"{vec_path}: its vector ids differ from the vid column of {docs_path.name}")
    snap = Snapshot(folder, manifest, index, _checked_passages(docs, extra_ids))
    for kind in ("lexical", "ann"):
        try:
            attach_derived(snap, want_lexical and kind == "lexical", want_ann and kind == "ann")
        except IndexFolderError as e:  # both are rebuilt from the vectors and docs at every commit
            snap.damaged[kind] = f"{e}; re-run `longretr index` on the corpus to rebuild it (nothing is re-encoded)"
    return snap


def attach_derived(snap: Snapshot, lexical: bool = True, ann: bool = True) -> None:
    """Read the version's lexical and ann files (those the manifest names) into `snap`, checked against its vectors
    and docs; an IndexFolderError names the file and the problem."""
    folder, files, index = snap.folder, snap.manifest["files"], snap.index
    if lexical and "lexical" in files:
        lex_path = folder / files["lexical"]
        try:
            lexical_index = LexicalIndex.load(lex_path)
        except LexicalIndexError as e:
            raise IndexFolderError(str(e)) from e
        if not np.array_equal(lexical_index.vids, snap.docs.column("vid").to_numpy()):
            raise IndexFolderError(f"{lex_path}: its documents differ from {files['docs']}")
        snap.lexical = lexical_index
    if ann and "ann" in files:
        ann_path = folder / files["ann"]
        ann_index = _read_faiss(ann_path)
        if ann_index.ntotal != index.ntotal or ann_index.d != index.d:
            raise IndexFolderError(f"{ann_path}: holds {ann_index.ntotal} vectors of dim {ann_index.d}, not "
                                   f"{index.ntotal} of dim {index.d}")
        index_types.set_search_params(ann_index, snap.manifest.get("search_params", {}))
        snap.ann = ann_index


def _checked_passages(docs: pa.Table, extra_ids: np.ndarray) -> pa.Table:
    """The docs table with a passages column whose entries each match their document's other vectors in number;
    others (an index from before passages, a hand-edited table) are null: search shows no passage for them, and
    the next `longretr index` finds them again from the text."""
    if PASSAGES.name not in docs.column_names:
        return docs.append_column(PASSAGES, pa.nulls(docs.num_rows, PASSAGES.type))
    if docs.schema.field(PASSAGES.name).type != PASSAGES.type:  # not pairs of offsets: none are known
        return docs.set_column(docs.schema.get_field_index(PASSAGES.name), PASSAGES,
                               pa.nulls(docs.num_rows, PASSAGES.type))
    owners, counts = np.unique(extra_ids & VID_MASK, return_counts=True)  # every owner is a vid (checked before)
    vids = docs.column("vid").to_numpy()
    order = np.argsort(vids)
    want = np.zeros(len(vids), dtype="int64")
    want[order[np.searchsorted(vids[order], owners)]] = counts
    column = docs.column(PASSAGES.name)
    have = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    wrong = column.is_valid().to_numpy(zero_copy_only=False) & (have != want)
    if not wrong.any():
        return docs
    kept = pc.if_else(pa.array(wrong), pa.nulls(docs.num_rows, PASSAGES.type), column)
    return docs.set_column(docs.schema.get_field_index(PASSAGES.name), PASSAGES, kept)


def _read_faiss(path: Path) -> faiss.Index:
    _named(path)
    try:
        return faiss.read_index(str(path))
    except Exception as e:
        raise IndexFolderError(f"{path}: truncated or not a FAISS index ({_first_line(e)})") from e


def empty_index(dim: int) -> faiss.Index:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def commit(folder: Path, manifest: dict, index: faiss.Index, docs: pa.Table) -> dict:
    """Write a new version (vectors, docs, lexical index, and the search index that
    manifest["index_type_requested"] asks for) and switch the manifest to it; remove older files."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        old = read_manifest(folder)
    except IndexFolderError:  # `--rebuild` over a damaged manifest: start over, without reusing file names
        old = None
    version = _next_version(folder, old)
    docs = docs.select(DOC_COLUMNS + [PASSAGES.name])
    plan = index_types.plan(manifest.get("index_type_requested", "flat"), index.d, index.ntotal)
    ann = index_types.build(plan, index)
    files = {"vectors": f"vectors-{version:06d}.faiss", "docs": f"docs-{version:06d}.parquet",
             "lexical": f"lexical-{version:06d}", **({"ann": f"ann-{version:06d}.faiss"} if ann is not None else {})}
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = {
        **{k: v for k, v in manifest.items() if k not in ("search_params", "index_type_note")},
        "format_version": FORMAT_VERSION,
        "version": version,
        "files": files,
        "count": docs.num_rows,
        "index_type": plan.description,
        "search_params": plan.params,
        **({"index_type_note": plan.note} if plan.note else {}),
        "created": (old or {}).get("created", now),
        "updated": now,
    }
    lexical = LexicalIndex.from_docs(docs, _previous_lexical(folder, old))
    # a failed write removes this version's files: they are new names (_next_version), no reader holds them
    with writing(folder, *(folder / name for name in files.values())):
        # streamed to the file: serialising in memory first took two more copies of the vectors and of the table
        atomic_write(folder / files["vectors"], _faiss_writer(index))
        atomic_write(folder / files["docs"], lambda f: pq.write_table(docs, f))
        lexical.save(folder / files["lexical"])
        if ann is not None:
            atomic_write(folder / files["ann"], _faiss_writer(ann))
        atomic_write_bytes(folder / MANIFEST, json.dumps(manifest, indent=2).encode())
    _remove_old_versions(folder, set(files.values()) | set((old or {}).get("files", {}).values()))
    return manifest


def _previous_lexical(folder: Path, manifest: dict | None) -> LexicalIndex | None:
    """The current version's lexical index, whose kept documents' term counts the next one reuses; None where there is
    none or it cannot be read (every document is tokenized then, which also repairs it)."""
    name = ((manifest or {}).get("files") or {}).get("lexical")
    try:
        return LexicalIndex.load(folder / name) if name else None
    except LexicalIndexError:
        return None


def _faiss_writer(index: faiss.Index):
    """Writes `index` to an open file, for atomic_write."""
    return lambda f: faiss.write_index(index, faiss.PyCallbackIOWriter(f.write))


def _next_version(folder: Path, old: dict | None) -> int:
    numbers = [int(m.group(1)) for p in folder.iterdir() if (m := re.fullmatch(r"\w+-(\d{6,})(\.\w+)?", p.name))]
    return max([(old or {}).get("version", 0), *numbers]) + 1


def _remove_old_versions(folder: Path, keep: set[str]) -> None:
    """Data files of versions before the previous one (readers may still hold that), and temp
    files of writers that died (the caller holds the writer lock, so no live writer owns them)."""
    for pattern in ("vectors-*.faiss", "docs-*.parquet", "ann-*.faiss", "lexical-*", ".*.tmp"):
        for path in folder.glob(pattern):
            if path.name not in keep:
                _discard(path)


@contextmanager
def writer_lock(folder: Path):
    """One writer per index folder; a second one fails at once with a clear message."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # not "w": that would wipe the holder's pid before we know; unbuffered: a pid that cannot be written (a full
        # disk) fails here, not again when the file is closed
        lock = open(folder / ".lock", "a+b", buffering=0)
    except OSError as e:  # --index naming a file, a folder under a file, or one we may not write
        raise IndexFolderError(f"{folder}: cannot use as an index folder ({e.strerror or e})") from e
    with lock as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            f.seek(0)
            holder = f.read().decode(errors="replace").strip()
            raise IndexFolderError(f"{folder}: another `longretr` process{f' (pid {holder})' if holder else ''} "
                                   "is writing this index; wait for it to finish") from e
        with suppress(OSError):  # the pid only informs a second writer; the flock is the lock
            f.truncate(0)
            f.write(str(os.getpid()).encode())
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def empty_docs() -> pa.Table:
    schema = pa.schema([
        ("vid", pa.int64()), ("id", pa.string()), ("path", pa.string()), ("title", pa.string()),
        ("n_tokens", pa.int64()), ("truncated", pa.bool_()), ("sha256", pa.string()), ("size", pa.int64()),
        ("mtime", pa.float64()), ("text", pa.string()), PASSAGES,
    ])
    return schema.empty_table()


def other_ids(vids: np.ndarray | int, j: np.ndarray | int) -> np.ndarray:
    """FAISS ids of documents' j-th other vectors (broadcast over vids and j): EXTRA_ID + j * EXTRA_STEP + vid."""
    return EXTRA_ID + np.asarray(j, dtype="int64") * EXTRA_STEP + np.asarray(vids, dtype="int64")


def add_vectors(index: faiss.Index, vids: np.ndarray, vectors: np.ndarray, extra: dict[int, np.ndarray]) -> None:
    """Documents' vectors under their vids, and their other vectors (row in vids -> [m, dim]) under other_ids."""
    vids = np.asarray(vids, dtype="int64")
    if len(vids):
        index.add_with_ids(np.ascontiguousarray(vectors, dtype="float32"), vids)
    if extra:
        rows = sorted(extra)
        ids = [other_ids(vids[r], np.arange(len(extra[r]))) for r in rows]
        index.add_with_ids(np.concatenate([extra[r] for r in rows]).astype("float32"), np.concatenate(ids))


def remove_vectors(index: faiss.Index, vids: set[int] | list[int]) -> None:
    """Documents' vectors and all their other vectors (absent ids are ignored)."""
    if vids:
        ids = faiss.vector_to_array(index.id_map)
        gone = ids[np.isin(ids & VID_MASK, np.array(sorted(vids), dtype="int64"))]
        if len(gone):
            index.remove_ids(gone)


def vectors_for(index: faiss.Index, vids: np.ndarray) -> np.ndarray:
    vids = np.asarray(vids, dtype="int64")
    return index.reconstruct_batch(vids) if len(vids) else np.zeros((0, index.d), "float32")
