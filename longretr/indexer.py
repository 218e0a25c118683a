"""`longretr index` and `longretr rm`: change an index folder, incrementally and crash-safely.

Only new and changed documents (by content hash) are encoded; documents whose files are gone are
removed; unchanged ones are skipped. Encoded vectors are saved in small pending shards as they are
made, so a run that is killed resumes without re-encoding them; the index itself only changes at
the final atomic commit (store.commit), which also rebuilds the lexical and search indexes.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from . import index_types, store
from .atomic import fsync_dir
from .config import DTYPE_NAMES, ModelConfig, load_config
from .corpus import Document, check_root, describe_others, read_corpus, warn
from .fusion import ranking_config

if TYPE_CHECKING:  # importing it imports torch and transformers: seconds a run with nothing to encode need not wait
    from .embedder import Embedder


class LazyEmbedder:
    """A model config's Embedder, loaded at first use: an `index` run with nothing to encode, or one a check refuses,
    loads no model (6-7 s of imports and loading on a 2-core CPU)."""

    def __init__(self, config: ModelConfig | str | Path, dtype: str | None = None) -> None:
        if dtype not in (None, *DTYPE_NAMES):  # checked now: a run with nothing to encode would never look at it
            raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPE_NAMES)}")
        self.config = config if isinstance(config, ModelConfig) else load_config(config)
        self._dtype = dtype
        self._embedder: Embedder | None = None

    @property
    def notice(self) -> Path | None:
        from .backbone import notice_file

        return notice_file(self.config)

    def get(self) -> Embedder:
        if self._embedder is None:
            from .embedder import Embedder

            self._embedder = Embedder(self.config, dtype=self._dtype)
        return self._embedder


@dataclass
class IndexSummary:
    documents: int  # in the index after this run
    encoded: int  # new or changed documents encoded in this run
    resumed: int  # taken from pending shards of an interrupted run
    removed: int
    unchanged: int
    skipped_files: int
    tokens: int  # tokens encoded in this run, lead vectors' included
    truncated: int  # documents in the index cut at the model's max tokens (indexed before windows, unreadable now)
    seconds: float
    index_type: str = "IDMap2,Flat"  # the search index built (may differ from the request, see note)
    note: str | None = None
    committed: bool = True  # False when nothing changed and the current version was kept

    def line(self) -> str:
        cut = f", {self.truncated} cut by an older longretr" if self.truncated else ""
        return (f"{self.documents} document{'s' * (self.documents != 1)} in index: {self.encoded} encoded "
                f"({self.tokens:,} tokens), {self.resumed} resumed, {self.unchanged} unchanged, "
                f"{self.removed} removed, {self.skipped_files} file{'s' * (self.skipped_files != 1)} skipped{cut}; "
                f"{self.index_type}; {self.seconds:.1f}s")

    def to_dict(self) -> dict:
        return asdict(self)


def index_corpus(
    root: Path | str,
    folder: Path | str,
    embedder: Embedder | LazyEmbedder,
    rebuild: bool = False,
    shard_tokens: int = 32768,
    progress: bool = True,
    index_type: str | None = None,
    ranking: dict | None = None,
) -> IndexSummary:
    """Bring the index at `folder` up to date with the documents under `root`. `index_type`
    (flat|ivf|hnsw|ivfpq|faiss factory) and `ranking` (mode, fusion, weight, rrf_k; see
    fusion.ranking_config) change the index's settings; None keeps the current ones. A LazyEmbedder loads its model
    only if there is something to encode."""
    start = time.perf_counter()
    folder = Path(folder)
    if not hasattr(embedder, "config"):
        raise TypeError(f"embedder must be an Embedder or a LazyEmbedder (e.g. LazyEmbedder('default')), got "
                        f"{type(embedder).__name__}")
    model = getattr(embedder, "get", None) or (lambda: embedder)  # a LazyEmbedder loads at its first use
    config = embedder.config
    fingerprint = config.fingerprint()
    if shard_tokens < 1:
        raise ValueError(f"--shard-tokens must be at least 1, got {shard_tokens}")
    check_root(root)  # before the lock, which creates the index folder
    fresh = not folder.exists()  # before the lock, which creates it
    with store.writer_lock(folder), _no_lock_only_folder(folder, fresh):
        with _rebuild_hint():
            current = None if rebuild else store.read_manifest(folder)
        if current is not None and current.get("model_fingerprint", fingerprint) != fingerprint:  # before a model load
            built = current.get("model") if isinstance(current.get("model"), dict) else {}
            raise store.IndexFolderError(
                f"{folder}: built with model {built.get('name')!r} (fingerprint {current.get('model_fingerprint')}), "
                f"not {config.name!r} ({fingerprint}); pass --rebuild to re-encode everything, or use another --index")
        with _rebuild_hint():
            old = None if current is None else store.load(folder, lexical=False, ann=False)
        skipped: list[str] = []  # unreadable now: their indexed documents are kept
        empty: list[str] = []  # read, and no text in them: their indexed documents go, as a deleted file's do
        others: list[Path] = []
        docs = _unique(read_corpus(root, skipped=skipped, progress=progress, others=others, empty=empty))
        old_rows = {} if old is None else \
            {r["id"]: r for r in old.docs.select(["id", "vid", "sha256", "path", "truncated"]).to_pylist()}
        if not docs and not old_rows:  # an empty index helps no one; say why nothing was found
            raise ValueError(f"{root}: no documents to index: {_why_none(skipped, empty, others)}")
        if others:
            warn_note(describe_others(others))
        # the vectors' dimension: the index's own (checked against its vectors by the load), else the model's, loaded
        # only now that there is something to encode: a refused first run loads no model
        dim = old.index.d if old is not None else model().dim
        settings = _settings(folder, dim, index_type, ranking)  # checked before any encoding
        # A document cut at max_tokens (indexed before windows) is encoded again, whole.
        todo = [d for d in docs if d.id not in old_rows or old_rows[d.id]["sha256"] != d.sha256
                or old_rows[d.id]["truncated"]]
        current = {d.id for d in docs}
        # A file that exists but cannot be read now (permissions, damage) is not a deletion: its
        # documents keep their indexed version; `longretr rm` removes them on purpose.
        kept = _ids_from_files(old_rows, skipped, Path(root)) - current
        gone_vids = [r["vid"] for i, r in old_rows.items() if i not in current and i not in kept]
        if old_rows and len(gone_vids) == len(old_rows):  # a wrong, emptied or unreadable folder would wipe the index
            found = f"no documents found: {_why_none(skipped, empty, others)}" if not docs else \
                f"it holds {len(docs)} other document{'s' * (len(docs) != 1)}, none of the index's"
            instead = "`longretr rm` removes documents, or delete the index folder" if not docs else \
                "`longretr index --rebuild` replaces them with this folder's, or use another --index"
            raise ValueError(f"{root}: {found}; this run would remove all {len(old_rows)} documents of {folder}: not "
                             f"done ({instead})")
        for doc_id in sorted(kept):
            warn(old_rows[doc_id]["path"], f"unreadable now; keeping the indexed version of {doc_id!r}")
        changed_vids = [old_rows[d.id]["vid"] for d in todo if d.id in old_rows]

        pending = folder / "pending" / fingerprint
        cached = _load_shards(pending)
        need = [d for d in todo if d.sha256 not in cached or cached[d.sha256]["truncated"]]  # (an older run's)
        with store.writing(folder):  # a full disk: the shards saved so far are kept for the next run
            tokens = _encode_in_shards(need, model, pending, cached, shard_tokens, progress)

        index = store.empty_index(dim) if old is None else old.index
        keep = old.docs if old is not None else store.empty_docs()
        drop = set(gone_vids) | set(changed_vids)
        if drop:
            store.remove_vectors(index, drop)
            mask = pa.array([v not in drop for v in keep.column("vid").to_pylist()])
            keep = keep.filter(mask)
        first_vid = (max(keep.column("vid").to_pylist()) + 1) if keep.num_rows else 0
        vids = np.arange(first_vid, first_vid + len(todo), dtype="int64")
        if todo:
            encoded = [cached[d.sha256] for d in todo]
            store.add_vectors(index, vids, np.stack([e["vector"] for e in encoded]),
                              {n: e["extra"] for n, e in enumerate(encoded) if e["extra"] is not None})
        new_rows = pa.Table.from_pylist([_row(d, int(v), cached[d.sha256]) for d, v in zip(todo, vids)],
                                        schema=keep.schema)
        table, upgraded = _with_passages(pa.concat_tables([keep, new_rows]), model)
        manifest = {
            "model": config.to_dict(),
            "model_fingerprint": fingerprint,
            "dim": dim,
            "metric": "inner_product",
            **settings,
        }
        plan = index_types.plan(settings["index_type_requested"], dim, index.ntotal)  # as commit plans it
        changed = old is None or todo or drop or any(old.manifest.get(k) != v for k, v in settings.items()) \
            or plan.description != old.manifest.get("index_type") \
            or "lexical" not in old.manifest["files"] or upgraded  # an older index gets what it lacks
        # A commit rebuilds the lexical and ann files anyway; a run that changes nothing reads them (an ANN index whole)
        # to repair a damaged one. old.index is as read: nothing was added or removed.
        damaged = None if changed else _damaged_derived(old)
        if changed or damaged:
            if damaged:
                warn_note(f"{damaged}: rebuilding it from the vectors and the docs table")
            # before the commit: no version is ever without its notice. It stays in the folder from version to
            # version: a commit that encoded nothing (settings, removals, a repair) needs no model code to find it
            notice = embedder.notice if old is None or need else None
            if notice is not None:
                with store.writing(folder):
                    store.atomic_write_bytes(folder / notice.name, notice.read_bytes())
            manifest = store.commit(folder, manifest, index, table)
        else:
            manifest = old.manifest
        if manifest.get("index_type_note"):
            warn_note(manifest["index_type_note"])
        _drop_pending(folder)
    return IndexSummary(
        documents=table.num_rows,
        encoded=len(need),
        resumed=len(todo) - len(need),
        removed=len(gone_vids),
        unchanged=len(docs) - len(todo) + len(kept),
        skipped_files=len(skipped) + len(empty),
        tokens=tokens,
        truncated=sum(table.column("truncated").to_pylist()),
        seconds=time.perf_counter() - start,
        index_type=manifest["index_type"],
        note=manifest.get("index_type_note"),
        committed=bool(changed or damaged),
    )


def remove_documents(folder: Path | str, ids: list[str]) -> dict:
    """`longretr rm`: remove documents by id in one new version; unknown ids refuse the whole call. Returns the new
    manifest with "removed": how many documents went (ids naming one twice, e.g. in two Unicode forms, count once).
    (A removed document whose file still exists comes back at the next `longretr index`.)"""
    folder = Path(folder)
    if isinstance(ids, str):  # each character would be an id
        raise TypeError(f"ids must be a list of document ids, got one str; wrap it in a list: [{ids!r}]")
    if not ids:
        raise ValueError("no document ids given")
    if not (folder / store.MANIFEST).is_file():  # before the lock, which would create the folder
        raise store.no_index(folder)
    with store.writer_lock(folder):
        snap = store.load(folder, lexical=False, ann=False)
        rows = store.match_ids(snap.docs, ids)
        unknown = [i for i in dict.fromkeys(ids) if i not in rows]
        if unknown:
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            shown = ", ".join(repr(i) for i in unknown[:10]) + more
            hint = store.did_you_mean(snap.docs, unknown[0]) or " (ids are as search results print them)"
            raise ValueError(f"{folder}: no document with id {shown}; nothing removed{hint}")
        ambiguous = [i for i, r in rows.items() if len(r) > 1]
        if ambiguous:
            raise ValueError(f"{folder}: {ambiguous[0]!r} matches {len(rows[ambiguous[0]])} ids that differ only in "
                             "their Unicode form; nothing removed (give each exactly, as `longretr search --json` "
                             "prints it)")
        vids = snap.docs.column("vid").to_pylist()
        drop = {vids[r[0]] for r in rows.values()}
        store.remove_vectors(snap.index, drop)
        docs = snap.docs.filter(pa.array([v not in drop for v in vids]))
        return {**store.commit(folder, snap.manifest, snap.index, docs), "removed": len(drop)}


def _settings(folder: Path, dim: int, index_type: str | None, ranking: dict | None) -> dict:
    """Index type and ranking for the next version: the requested ones, else the current ones."""
    try:
        current = store.read_manifest(folder) or {}
    except store.IndexFolderError:  # a damaged manifest (rebuild) keeps nothing
        current = {}
    requested = index_type if index_type is not None else current.get("index_type_requested", "flat")
    try:
        merged = ranking_config(current.get("ranking"), **(ranking or {}))
    except ValueError as e:
        ranking_config(**(ranking or {}))  # the request's own settings are wrong: say so
        raise store.IndexFolderError(f"{folder / store.MANIFEST}: bad ranking settings ({e}); pass good ones "
                                     "with --mode/--fusion/--weight/--rrf-k") from e
    return {"index_type_requested": index_types.check(requested, dim), "ranking": merged}


@contextmanager
def _no_lock_only_folder(folder: Path, fresh: bool) -> Iterator[None]:
    """A run that fails before writing anything into the folder it made (bad settings, no documents) leaves no folder
    holding only the lock file, which reads as an index folder with no index. Entered with the lock held."""
    try:
        yield
    except BaseException:
        if fresh and [p.name for p in folder.iterdir()] == [".lock"]:
            (folder / ".lock").unlink(missing_ok=True)
            with suppress(OSError):
                folder.rmdir()
        raise


@contextmanager
def _rebuild_hint() -> Iterator[None]:
    """An index that cannot be read is started over by --rebuild: its error says so."""
    try:
        yield
    except store.IndexFolderError as e:
        raise store.IndexFolderError(f"{e}; pass --rebuild to start this index over (re-encodes everything)") from e


def _damaged_derived(old: store.Snapshot) -> str | None:
    """Why the current version's lexical or ann file cannot be read, or (a lexical folder of bm25s' own files) is to
    be written anew; None if neither. The commit rebuilds both from the vectors and the docs table, which the writer
    has read, so re-running `longretr index` repairs them."""
    try:
        store.attach_derived(old)
        if old.lexical is not None and old.lexical.legacy:  # searchable, but a later commit could reuse no counts
            lexical = old.folder / old.manifest["files"]["lexical"]
            return f"{lexical}: written by an older longretr (bm25s' files, no term counts)"
    except store.IndexFolderError as e:
        return str(e)
    finally:
        old.lexical = old.ann = None  # only checked: the writer never searches
    return None


def _why_none(skipped: list[str], empty: list[str], others: list[Path]) -> str:
    why = [f"{len(skipped)} file{'s' * (len(skipped) != 1)} could not be read"] if skipped else []
    why += [f"{len(empty)} file{'s' * (len(empty) != 1)} held no text"] if empty else []
    if why:
        return f"{' and '.join(why)} (warnings above)"
    return describe_others(others) if others else "the folder holds no files"


PENDING_MODEL = "model.json"
# Texts tokenized at once where only a count or a few ranges per text are kept: the token lists of a whole corpus,
# with their character offsets, were held at once before (`make bench-memory`: 2,322 MiB for 20,000 small files,
# 910 MiB batched).
TOKENIZE_BATCH = 64
TOKENIZE_CHARS = 1_000_000  # and at most this many characters a call (one longer text goes alone: the embedder
                            # tokenizes it in pieces)


def _tokenize_batches(sizes: list[int]) -> list[range]:
    """Consecutive index ranges of at most TOKENIZE_BATCH texts and, where more than one, TOKENIZE_CHARS
    characters."""
    out, start, chars = [], 0, 0
    for i, n in enumerate(sizes):
        if i > start and (i - start == TOKENIZE_BATCH or chars + n > TOKENIZE_CHARS):
            out.append(range(start, i))
            start, chars = i, 0
        chars += n
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


def _drop_pending(folder: Path) -> None:
    """Removes the committed run's shards: renamed away first (one step), so that a kill while they are being deleted
    leaves no pending/ that `info` would report as vectors not committed yet (a later commit sweeps the .tmp)."""
    trash = folder / f".pending.{os.getpid()}.tmp"
    shutil.rmtree(trash, ignore_errors=True)  # a dead run's of the same pid
    try:
        os.replace(folder / "pending", trash)
    except FileNotFoundError:
        return
    fsync_dir(folder)  # as every rename of a run (a power loss would bring pending/ back: harmless, but wrong)
    shutil.rmtree(trash, ignore_errors=True)


def pending_model(folder: Path | str) -> dict | None:
    """The model config (as a dict) of the pending shards an interrupted run left in an index folder, if they are of
    one model; None otherwise."""
    found = list(Path(folder).glob(f"pending/*/{PENDING_MODEL}"))
    if len(found) != 1:
        return None
    with suppress(OSError, ValueError):
        model = json.loads(found[0].read_text())
        return model if isinstance(model, dict) else None
    return None


def pending_documents(folder: Path | str) -> int:
    """Documents whose vectors an interrupted run saved in pending shards (any model's), for its message."""
    count = 0
    for path in store.pending_shards(Path(folder)):
        with suppress(Exception):  # a shard cut short is re-encoded anyway
            count += len(np.load(path)["sha256"])
    return count


def warn_note(note: str) -> None:
    print(f"longretr: note: {note}", file=sys.stderr)


def _ids_from_files(old_rows: dict, skipped: list[str], root: Path) -> set[str]:
    """Ids of indexed documents that came from the skipped files (path "a.txt" or "rows.jsonl#id") or from files
    under the skipped (unreadable) folders."""
    base = root.parent if root.is_file() else root
    rels = set()
    for path in skipped:
        try:
            rels.add(Path(path).relative_to(base).as_posix())  # the corpus folder itself is "."
        except ValueError:
            continue
    if not rels:  # the usual run: nothing skipped, no path of every document to take apart
        return set()

    def from_skipped(path: str) -> bool:
        file = PurePosixPath(path.split("#", 1)[0])
        return path in rels or file.as_posix() in rels or any(p.as_posix() in rels for p in file.parents)

    return {i for i, r in old_rows.items() if from_skipped(r["path"])}


def _unique(docs) -> list[Document]:
    """Documents with distinct ids: a table row's id may repeat a file's path or another table's row id."""
    out, first = [], {}
    for d in docs:
        if d.id in first:
            warn(d.path, f"duplicate document id {d.id!r}; keeping the one from {first[d.id]}")
            continue
        first[d.id] = d.path
        out.append(d)
    return out


def _row(d: Document, vid: int, enc: dict) -> dict:
    return {"vid": vid, "id": d.id, "path": d.path, "title": d.title, "n_tokens": int(enc["n_tokens"]),
            "truncated": bool(enc["truncated"]), "sha256": d.sha256, "size": d.size, "mtime": d.mtime,
            "text": d.text}


def _with_passages(table: pa.Table, model) -> tuple[pa.Table, bool]:
    """The docs table with each missing passages entry (a new document's, or one indexed before passages were
    kept) found from its text by the tokenizer alone, and whether there was any to find."""
    if table.column(store.PASSAGES.name).null_count == 0:  # the usual case: no Python lists for a big index
        return table, False
    column = table.column(store.PASSAGES.name).to_pylist()
    missing = [i for i, p in enumerate(column) if p is None]
    texts = table.column("text")
    sizes = pc.utf8_length(pc.take(texts, pa.array(missing, pa.int64()))).to_pylist() if missing else []
    for batch in _tokenize_batches(sizes):  # a few texts' offsets in memory at a time, not the corpus's
        part = [missing[j] for j in batch]
        found = model().passages([texts[i].as_py() for i in part])
        if found is None:  # a tokenizer without character offsets
            return table, False
        for i, ranges in zip(part, found):
            column[i] = ranges.tolist()
    at = table.schema.get_field_index(store.PASSAGES.name)
    return table.set_column(at, store.PASSAGES, pa.array(column, store.PASSAGES.type)), True


def _encode_in_shards(need, model, pending: Path, cached: dict, shard_tokens: int, progress: bool) -> int:
    if not need:
        return 0
    embedder = model()
    # leads and windows included, so the bar's rate is real; counted a few texts at a time (_tokenize_batches)
    lengths = [n for batch in _tokenize_batches([len(d.text) for d in need])
               for n in embedder.document_tokens([need[j].text for j in batch])]
    # Shards take documents in the order of their hashes, a fixed shuffle (each shard still packs its own by length):
    # a token of a 32k document costs 2-3.5 times one of a 2k document, so with the longest first the ETA was 2.8x
    # the time left a quarter and half of the way through 60 demo pages, and 1.1-1.4x in this order (by hand,
    # 2026-12-07). The ETA and rate are averages since the start (smoothing=0): the last few updates' rate swings
    # with the length of the document in hand.
    order = sorted(range(len(need)), key=lambda i: need[i].sha256)
    done_docs, shard, shard_len = 0, [], 0
    pending.mkdir(parents=True, exist_ok=True)
    # the model these shards are of: a rerun of an interrupted first run without --model takes it up (cli._built_with)
    store.atomic_write_bytes(pending / PENDING_MODEL, json.dumps(embedder.config.to_dict()).encode())
    # closed on an error too: the error line is printed after the bar, not on it
    with tqdm(total=sum(lengths), unit="tok", unit_scale=True, disable=not progress, desc="indexing",
              dynamic_ncols=True, smoothing=0) as bar:
        for pos, i in enumerate(order):
            shard.append(i)
            shard_len += lengths[i]
            if shard_len >= shard_tokens or pos == len(order) - 1:
                enc = embedder.encode_documents([need[j].text for j in shard], progress=bar)  # moves it per layer
                shas = [need[j].sha256 for j in shard]
                _save_shard(pending, shas, enc)
                for n, sha in enumerate(shas):
                    cached[sha] = {"vector": enc.vectors[n], "n_tokens": enc.n_tokens[n], "truncated": enc.truncated[n],
                                   "extra": enc.extra.get(n)}
                done_docs += len(shard)
                bar.set_postfix(docs=f"{done_docs}/{len(need)}")
                shard, shard_len = [], 0
    return sum(lengths)


def _save_shard(pending: Path, shas: list[str], enc) -> None:
    rows = sorted(enc.extra)  # each other vector stored with its document's row
    owners = np.array([r for r in rows for _ in enc.extra[r]], dtype="int64")
    extra = np.concatenate([enc.extra[r] for r in rows]) if rows else np.zeros((0, enc.vectors.shape[1]), "float32")
    buffer = io.BytesIO()
    np.savez(buffer, sha256=np.array(shas), vectors=enc.vectors, n_tokens=np.array(enc.n_tokens),
             truncated=np.array(enc.truncated), extra_rows=owners, extra=extra)
    store.atomic_write_bytes(pending / f"shard-{time.time_ns()}-{shas[0][:8]}.npz", buffer.getvalue())


def _load_shards(pending: Path) -> dict:
    cached = {}
    for path in sorted(pending.glob("shard-*.npz")):
        try:
            data = np.load(path)
            if "extra_rows" in data.files:
                owners, vectors = data["extra_rows"], data["extra"]
            elif "lead_rows" in data.files:  # a shard of an older version: at most a lead vector each
                owners, vectors = data["lead_rows"], data["leads"]
            else:  # older still: no other vectors
                owners, vectors = np.zeros(0, "int64"), None
            for n, (sha, vec, nt, tr) in enumerate(zip(data["sha256"], data["vectors"], data["n_tokens"],
                                                       data["truncated"])):
                cached[str(sha)] = {"vector": vec, "n_tokens": int(nt), "truncated": bool(tr),
                                    "extra": vectors[owners == n] if (owners == n).any() else None}
        except Exception as e:  # a shard cut short by a crash is simply re-encoded
            warn(path, f"unreadable pending shard, its documents will be re-encoded ({e})")
    return cached
