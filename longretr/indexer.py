"""`longretr index`: encode a folder of documents into an index folder, incrementally.

Only new and changed documents (by content hash) are encoded. Encoded vectors are saved in small
pending shards as they are made, so a run that is killed resumes without re-encoding them; the
index itself only changes at the final atomic commit.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from . import store
from .corpus import Document, read_corpus, warn
from .embedder import Embedder


@dataclass
class IndexSummary:
    documents: int  # in the index after this run
    encoded: int  # new or changed documents encoded in this run
    resumed: int  # taken from pending shards of an interrupted run
    removed: int
    unchanged: int
    skipped_files: int
    tokens: int  # tokens encoded in this run
    truncated: int  # documents in the index cut at the model's max tokens
    seconds: float

    def line(self) -> str:
        return (f"{self.documents} documents in index: {self.encoded} encoded ({self.tokens:,} tokens), "
                f"{self.resumed} resumed, {self.unchanged} unchanged, {self.removed} removed, "
                f"{self.skipped_files} files skipped, {self.truncated} truncated; {self.seconds:.1f}s")

    def to_dict(self) -> dict:
        return asdict(self)


def index_corpus(
    root: Path | str,
    folder: Path | str,
    embedder: Embedder,
    rebuild: bool = False,
    shard_tokens: int = 32768,
    progress: bool = True,
) -> IndexSummary:
    start = time.perf_counter()
    folder = Path(folder)
    fingerprint = embedder.config.fingerprint()
    with store.writer_lock(folder):
        old = None if rebuild or store.read_manifest(folder) is None else store.load(folder)
        if old is not None and old.manifest["model_fingerprint"] != fingerprint:
            raise store.IndexFolderError(
                f"{folder}: built with model {old.manifest['model']['name']!r} "
                f"(fingerprint {old.manifest['model_fingerprint']}), not {embedder.config.name!r} "
                f"({fingerprint}); pass --rebuild to re-encode everything, or use another --index"
            )
        skipped: list[str] = []
        docs = _unique(read_corpus(root, skipped=skipped))
        old_rows = {} if old is None else {r["id"]: r for r in old.docs.select(["id", "vid", "sha256"]).to_pylist()}
        todo = [d for d in docs if d.id not in old_rows or old_rows[d.id]["sha256"] != d.sha256]
        current = {d.id for d in docs}
        gone_vids = [r["vid"] for i, r in old_rows.items() if i not in current]
        changed_vids = [old_rows[d.id]["vid"] for d in todo if d.id in old_rows]

        pending = folder / "pending" / fingerprint
        cached = _load_shards(pending)
        need = [d for d in todo if d.sha256 not in cached]
        tokens = _encode_in_shards(need, embedder, pending, cached, shard_tokens, progress)

        index = store.empty_index(embedder.dim) if old is None else old.index
        keep = old.docs if old is not None else store.empty_docs()
        drop = set(gone_vids) | set(changed_vids)
        if drop:
            index.remove_ids(np.array(sorted(drop), dtype="int64"))
            mask = pa.array([v not in drop for v in keep.column("vid").to_pylist()])
            keep = keep.filter(mask)
        first_vid = (max(keep.column("vid").to_pylist()) + 1) if keep.num_rows else 0
        vids = np.arange(first_vid, first_vid + len(todo), dtype="int64")
        if todo:
            index.add_with_ids(np.stack([cached[d.sha256]["vector"] for d in todo]), vids)
        new_rows = pa.Table.from_pylist([_row(d, int(v), cached[d.sha256]) for d, v in zip(todo, vids)],
                                        schema=keep.schema)
        table = pa.concat_tables([keep, new_rows])
        manifest = {
            "model": embedder.config.to_dict(),
            "model_fingerprint": fingerprint,
            "dim": embedder.dim,
            "metric": "inner_product",
            "index_type": "IDMap2,Flat",
        }
        store.commit(folder, manifest, index, table)
        if embedder.notice is not None:
            shutil.copy(embedder.notice, folder / embedder.notice.name)
        shutil.rmtree(folder / "pending", ignore_errors=True)
    return IndexSummary(
        documents=table.num_rows,
        encoded=len(need),
        resumed=len(todo) - len(need),
        removed=len(gone_vids),
        unchanged=len(docs) - len(todo),
        skipped_files=len(skipped),
        tokens=tokens,
        truncated=sum(table.column("truncated").to_pylist()),
        seconds=time.perf_counter() - start,
    )


def _unique(docs) -> list[Document]:
    out, seen = [], set()
    for d in docs:
        if d.id in seen:
            warn(d.path, f"duplicate document id {d.id!r}, keeping the first")
            continue
        seen.add(d.id)
        out.append(d)
    return out


def _row(d: Document, vid: int, enc: dict) -> dict:
    return {"vid": vid, "id": d.id, "path": d.path, "title": d.title, "n_tokens": int(enc["n_tokens"]),
            "truncated": bool(enc["truncated"]), "sha256": d.sha256, "size": d.size, "mtime": d.mtime,
            "text": d.text}


def _encode_in_shards(need, embedder, pending: Path, cached: dict, shard_tokens: int, progress: bool) -> int:
    if not need:
        return 0
    ids, _ = embedder.tokenize([d.text for d in need])
    lengths = [len(x) for x in ids]
    order = sorted(range(len(need)), key=lambda i: -lengths[i])  # long first: the ETA errs high
    bar = tqdm(total=sum(lengths), unit="tok", unit_scale=True, disable=not progress, desc="indexing",
               dynamic_ncols=True)
    done_docs, shard, shard_len = 0, [], 0
    pending.mkdir(parents=True, exist_ok=True)
    for pos, i in enumerate(order):
        shard.append(i)
        shard_len += lengths[i]
        if shard_len >= shard_tokens or pos == len(order) - 1:
            enc = embedder.encode_documents([need[j].text for j in shard], progress=False)
            shas = [need[j].sha256 for j in shard]
            _save_shard(pending, shas, enc)
            for n, sha in enumerate(shas):
                cached[sha] = {"vector": enc.vectors[n], "n_tokens": enc.n_tokens[n], "truncated": enc.truncated[n]}
            done_docs += len(shard)
            bar.set_postfix(docs=f"{done_docs}/{len(need)}", refresh=False)
            bar.update(shard_len)
            shard, shard_len = [], 0
    bar.close()
    return sum(lengths)


def _save_shard(pending: Path, shas: list[str], enc) -> None:
    path = pending / f"shard-{time.time_ns()}-{shas[0][:8]}.npz"
    tmp = pending / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, sha256=np.array(shas), vectors=enc.vectors, n_tokens=np.array(enc.n_tokens),
                 truncated=np.array(enc.truncated))
    tmp.replace(path)


def _load_shards(pending: Path) -> dict:
    cached = {}
    for path in sorted(pending.glob("shard-*.npz")):
        try:
            data = np.load(path)
            for sha, vec, nt, tr in zip(data["sha256"], data["vectors"], data["n_tokens"], data["truncated"]):
                cached[str(sha)] = {"vector": vec, "n_tokens": int(nt), "truncated": bool(tr)}
        except Exception as e:  # a shard cut short by a crash is simply re-encoded
            warn(path, f"unreadable pending shard, its documents will be re-encoded ({e})")
    return cached
