"""Top-k search over an index folder, single queries or batches (pyserini-style run files).

Three modes: "dense" (the embedder's vectors), "lexical" (BM25 on the text) and "hybrid" (both
lists, HYBRID_DEPTH deep, fused as the index manifest's "ranking" section says; see fusion.py).
"""

from __future__ import annotations

import functools
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import index_types, store
from .config import ModelConfig, unknown_keys
from .fusion import check_mode, fuse_ranked, fusion_scores
from .queries import Filter, Hit, check_k, check_texts, encodes

if TYPE_CHECKING:  # torch and transformers load only when a search needs the model (lexical search never does)
    from .embedder import Embedder

HYBRID_DEPTH = 100  # candidates taken from each list before fusing (at least k)


class ModelMismatch(Exception):
    pass


def index_model(folder: Path | str) -> ModelConfig:
    """The model config an index was built with, from its manifest."""
    manifest = store.read_manifest(Path(folder))
    if manifest is None:
        raise store.no_index(folder)
    return manifest_model(folder, manifest)


def manifest_model(folder: Path | str, manifest: dict) -> ModelConfig:
    """The manifest's model config; one this version cannot read (e.g. written by another version) is an index error."""
    model = manifest.get("model")
    unknown = unknown_keys(model) if isinstance(model, dict) else []
    if not isinstance(model, dict) or unknown:
        raise store.IndexFolderError(
            f"{Path(folder) / store.MANIFEST}: model config with settings this longretr does not know "
            f"({', '.join(unknown) or 'not a table'}); it was written by another version: re-index with --rebuild"
        )
    return ModelConfig(**model)


class Searcher:
    """Searches one index folder (the version loaded when it is made) with the model it was built with."""

    def __init__(self, folder: Path | str, embedder: Embedder | None = None) -> None:
        """`embedder`: the index's model, already loaded; None: loaded from the manifest at the first dense or
        hybrid search."""
        if embedder is not None and not hasattr(embedder, "encode_queries"):
            raise TypeError(f"embedder must be an Embedder (e.g. Embedder('default')) or None for the index's own "
                            f"model, got {type(embedder).__name__}")
        self.folder = Path(folder)
        self.snapshot = store.load(folder)
        manifest = self.snapshot.manifest
        self.ranking = store.manifest_ranking(self.folder, manifest)
        config = manifest_model(folder, manifest) if embedder is None else embedder.config
        self._embedder = embedder
        if embedder is not None:  # a wrong model fails at once; the index's own is checked when it loads
            self._check_model(config, own=False)
        self._embedder_lock = threading.Lock()
        self._config = config
        self.index, self.index_device = index_types.to_gpu(self.snapshot.search_index)
        docs = self.snapshot.docs
        self._rows = {vid: i for i, vid in enumerate(docs.column("vid").to_pylist())}
        self._ids = docs.column("id").to_pylist()
        self._titles = docs.column("title").to_pylist()
        self._paths = docs.column("path").to_pylist()
        self._texts = docs.column("text")
        self._passages = docs.column(store.PASSAGES.name)
        # documents whose first other vector is a lead (hybrid fusion reads it back: _for_fusion)
        vids, n_tokens = docs.column("vid").to_pylist(), docs.column("n_tokens").to_pylist()
        self._lead_vids = np.array([v for v, n in zip(vids, n_tokens) if config.lead_for(n)], dtype="int64")
        # A pass over every document per filter: once, not again for each search with it (the server checks a filter,
        # then searches with it, for every batch). One index version per Searcher, so the cache never goes stale. A
        # plain dict of arrays: an lru_cache of a bound method is a reference cycle, which kept every version a
        # server had reloaded from in memory until the garbage collector's next full pass.
        self._filters: dict[Filter, np.ndarray] = {}
        self._filters_lock = threading.Lock()

    @property
    def embedder(self) -> Embedder:
        """The index's model, loaded on first use: lexical search never needs it."""
        with self._embedder_lock:  # threads sharing a Searcher load it once
            if self._embedder is None:
                from .embedder import Embedder

                self._check_model(self._config, own=True)
                self._embedder = Embedder(self._config)
        return self._embedder

    def _check_model(self, config: ModelConfig, own: bool) -> None:
        """Refuses a model whose vectors would not match the index's: another model, or the index's own whose
        adapter files are missing or changed since the index was built."""
        manifest = self.snapshot.manifest
        built, name = manifest["model_fingerprint"], manifest["model"]["name"]
        try:
            fingerprint = config.fingerprint()
        except FileNotFoundError as e:  # the adapter folder is gone: only lexical search can work
            raise FileNotFoundError(f"{self.folder} was built with model {name!r}, which cannot be loaded: {e}; "
                                    "restore it, or search with `longretr search --mode lexical`, which needs no "
                                    "model") from None
        if fingerprint == built:
            return
        if own:
            raise ModelMismatch(
                f"{self.folder} was built with model {name!r} (fingerprint {built}), whose adapter files have "
                f"changed since (fingerprint now {fingerprint}): its vectors would not match the queries'. Restore "
                "them, search with `longretr search --mode lexical`, or re-index with --rebuild."
            )
        raise ModelMismatch(
            f"{self.folder} was built with model {name!r} (fingerprint {built}); searching it with {config.name!r} "
            f"({fingerprint}) would compare incompatible vectors. Search without --model, or re-index with this "
            "model."
        )

    @functools.cached_property
    def _vector_ids(self) -> np.ndarray:
        """The flat index's vector ids (filtered searches select from them)."""
        return faiss.vector_to_array(self.snapshot.index.id_map)

    @property
    def damaged(self) -> dict[str, str]:
        """The index's lexical or ann file that could not be read, by kind, and why. Without the ann file dense
        search is exact over every vector (slower on a large index); without the lexical file only dense search
        works. Re-running `longretr index` repairs both."""
        return self.snapshot.damaged

    def warnings(self) -> list[str]:
        """One line per damaged file, saying what search does without it."""
        does = {"ann": "dense search reads every vector meanwhile (exact, slower)",
                "lexical": "lexical and hybrid search refuse meanwhile"}
        return [f"{message}; {does[kind]}" for kind, message in self.damaged.items()]

    @property
    def version(self) -> int:
        """The loaded index version's number (its manifest's)."""
        return int(self.snapshot.manifest.get("version", 0))

    @property
    def count(self) -> int:
        """Documents in the loaded index version."""
        return self.snapshot.count

    def search(self, queries: list[str], k: int = 10, mode: str | None = None,
               where: Filter | None = None) -> list[list[Hit]]:
        """Top-k hits per query (fewer where the index holds fewer matches); mode "dense" | "lexical" | "hybrid",
        None: the index's default. Queries must be non-empty strings. `where`: only the documents it keeps, searched
        exactly (the best k of them, whatever the index type), as if the index held nothing else."""
        mode = check_mode(self.ranking["mode"] if mode is None else mode)
        k = check_k(k)
        queries = check_texts(queries, "queries")
        blank = next((i for i, q in enumerate(queries) if not q.strip()), None)
        if blank is not None:  # dense mode would search with the instruction alone
            raise ValueError(f"queries[{blank}] is empty or whitespace only")
        if where is not None and not isinstance(where, Filter):
            raise TypeError(f"where must be a longretr.queries.Filter, got {type(where).__name__}")
        within = None if where is None else self._within(where)
        if not queries or self.count == 0 or (within is not None and not len(within)):
            return [[] for _ in queries]
        if mode != "dense" and "lexical" in self.damaged:
            raise store.IndexFolderError(f"{self.damaged['lexical']}; dense mode works meanwhile")
        if mode != "dense" and self.snapshot.lexical is None:
            raise ValueError(f"{self.folder}: this index has no lexical index (built by an older longretr); "
                             f"re-run `longretr index CORPUS --index {self.folder}` to add it (nothing is re-encoded), "
                             "or search with --mode dense")
        if mode == "lexical":
            return self._hits(self.snapshot.lexical.search(queries, k, within), queries)
        depth = k if mode == "dense" else max(k, HYBRID_DEPTH)
        vectors = self.embedder.encode_queries(queries)
        dense = self._dense(vectors, depth, for_fusion=mode == "hybrid", within=within)
        if mode == "dense":
            return self._hits(dense, queries, vectors)
        lexical = self.snapshot.lexical.search(queries, depth, within)
        # scored over the first HYBRID_DEPTH of each list whatever k is, so that a larger k only adds results
        fused = [fuse_ranked(d, lx, k, self.ranking, HYBRID_DEPTH) for d, lx in zip(dense, lexical)]
        return self._hits(fused, queries, vectors)

    def search_vectors(self, vectors: np.ndarray, queries: list[str], k: int) -> list[list[Hit]]:
        """Dense search with query vectors already encoded (an array [queries, dim], one per query, for the
        snippets)."""
        k = check_k(k)  # _dense would turn k <= 0 into 1
        queries = check_texts(queries, "queries")
        if not queries and not len(vectors):
            return []
        vectors = np.asarray(vectors, dtype="float32")
        if vectors.ndim != 2 or vectors.shape[1] != self.snapshot.index.d:  # faiss asserts with no message
            raise ValueError(f"query vectors must be an array [queries, {self.snapshot.index.d}], got shape "
                             f"{list(vectors.shape)}")
        if len(vectors) != len(queries):  # zip would drop the extra ones silently
            raise ValueError(f"{len(vectors)} query vectors for {len(queries)} queries")
        if self.count == 0:
            return [[] for _ in queries]
        return self._hits(self._dense(vectors, k), queries, vectors)

    def document(self, doc_id: str, start: int | None = None, end: int | None = None) -> dict:
        """A document's indexed text, or characters [start, end) of it (a hit's passage), with its id, path, title and
        tokens: store.document."""
        return store.document(self.snapshot, doc_id, start, end)

    def check_filter(self, where: Filter, what: str = "the filter") -> list[str]:
        """A ValueError if `where` keeps no document of the index: a typo most likely, which a search would answer with
        no hits at all. The message shows what ids and paths look like (`longretr search`, the server's 422). Returns
        the filter's ids that are not in the index (sorted), which a caller may warn about."""
        if not len(self._within(where)):
            example = f", e.g. {self._ids[0]!r}" if self._ids else ""
            raise ValueError(f"{self.folder}: no document matches {what} (ids and paths are relative to the corpus "
                             f"folder{example})")
        return sorted(where.ids - self._nfc_id_set) if where.ids else []

    @functools.cached_property
    def _nfc_ids(self) -> pa.ChunkedArray:
        """The docs table's ids in NFC, as Filter compares them."""
        return pc.utf8_normalize(self.snapshot.docs.column("id"), "NFC")

    @functools.cached_property
    def _nfc_id_set(self) -> frozenset[str]:
        """The same as a set, built once: the server checks a filter's ids against it for every batch."""
        return frozenset(self._nfc_ids.to_pylist())

    @functools.cached_property
    def _nfc_paths(self) -> pa.ChunkedArray:
        return pc.utf8_normalize(self.snapshot.docs.column("path"), "NFC")

    def _within(self, where: Filter) -> np.ndarray:
        """_kept_vids, cached per filter (the 64 most recently made); threads share the cache (the server's)."""
        with self._filters_lock:
            kept = self._filters.get(where)
        if kept is None:  # computed outside the lock: a new filter's pass over every document holds no one up
            kept = self._kept_vids(where)
            with self._filters_lock:
                if where not in self._filters and len(self._filters) >= 64:
                    self._filters.pop(next(iter(self._filters)))
                self._filters[where] = kept
        return kept

    def _kept_vids(self, where: Filter) -> np.ndarray:
        """The vids of the documents `where` keeps, in row order (read-only: cached per filter by _within), by arrow
        compute over the NFC columns, which are normalised once per Searcher."""
        keep = np.ones(self.count, dtype=bool)
        if where.path_prefix is not None:  # one with undecodable bytes (lone surrogates) starts no path
            prefix = where.path_prefix
            keep &= pc.starts_with(self._nfc_paths, prefix).to_numpy() if encodes(prefix) else False
        if where.ids is not None:  # such an id is in no document, and must not hide the others (as a typo does not)
            wanted = pa.array([i for i in sorted(where.ids) if encodes(i)], pa.string())
            keep &= pc.is_in(self._nfc_ids, value_set=wanted).to_numpy()
        vids = self.snapshot.docs.column("vid").to_numpy()[keep]
        vids.setflags(write=False)
        return vids

    def _dense(self, vectors: np.ndarray, k: int, for_fusion: bool = False,
               within: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """Top-k (vid, score): a document with other vectors (lead, spans) scores its best cosine, or for hybrid
        fusion, fusion.fusion_scores of it. `within`: only these documents, searched in the flat (exact) index."""
        index, params, documents, total = self.index, None, self.count, self.index.ntotal
        if within is not None:  # an ANN index would return too few of them when they are a small part of it
            index = self.snapshot.index
            ids = self._vector_ids[np.isin(self._vector_ids & store.VID_MASK, within)]
            selector = faiss.IDSelectorBatch(ids)  # kept alive here while params points to it
            params = faiss.SearchParameters(sel=selector)
            documents, total = len(within), len(ids)
        k = max(1, min(k, documents))
        vectors = np.ascontiguousarray(vectors, dtype="float32")
        if total == documents:  # one vector per document: its cosine is the score
            # Tied scores (duplicate documents) come in FAISS's heap order, which changes with k: read on past the cut
            # while it splits a tie, then order ties by vid, so that the top k are the start of the top k + 1.
            depth = min(k + 1, total)
            while True:
                scores, ids = index.search(vectors, depth, params=params)
                # (an ANN index fills slots it found nothing for with id -1: no tie, and reading on finds no more)
                if depth >= total or not ((scores[:, -1] == scores[:, k - 1]) & (ids[:, -1] >= 0)).any():
                    break
                depth = min(2 * depth, total)
            return [_by_score_then_vid([(int(i), float(s)) for s, i in zip(row_s, row_i) if i >= 0])[:k]
                    for row_s, row_i in zip(scores, ids)]
        # A document ranks where its best vector first appears, so the top k are the first k distinct documents in the
        # vector ranking. For fusion, read on until the k-th document's score is at least the last cosine read: a
        # document none of whose vectors was read cannot score more (fusion_scores is never above the best cosine).
        depth = min(2 * k, total)
        while True:
            scores, ids = index.search(vectors, depth, params=params)
            out, complete = [], True
            for query, row_s, row_i in zip(vectors, scores, ids):
                best: dict[int, float] = {}  # vid -> score, in rank order
                for s, i in zip(row_s, row_i):
                    if i >= 0:
                        best.setdefault(int(i) & store.VID_MASK, float(s))
                ranked = (self._for_fusion(query, best) if for_fusion else _by_score_then_vid(best.items()))[:k]
                out.append(ranked)  # a tie with the last cosine read may go on past it (as above)
                complete &= len(ranked) == k and (ranked[-1][1] >= row_s[-1] if for_fusion else
                                                  ranked[-1][1] > row_s[-1])
            if complete or depth >= total:
                return out
            depth = min(4 * depth, total)

    def _for_fusion(self, query: np.ndarray, best: dict[int, float]) -> list[tuple[int, float]]:
        """The candidates (vid -> best cosine) by fusion.fusion_scores, best first; whole and lead vectors are read
        back from the flat index."""
        vids = np.fromiter(best, dtype="int64", count=len(best))
        doc = store.vectors_for(self.snapshot.index, vids) @ query
        has_lead = np.isin(vids, self._lead_vids)
        leads = store.vectors_for(self.snapshot.index, store.other_ids(vids[has_lead], 0)) @ query
        doc[has_lead] = np.maximum(doc[has_lead], leads)
        scores = fusion_scores(np.fromiter(best.values(), dtype="float32", count=len(best)), doc)
        order = np.lexsort((vids, -scores))  # ties by vid, so the order is deterministic
        return [(int(vids[i]), float(scores[i])) for i in order]

    def _hits(self, ranked: list[list[tuple[int, float]]], queries: list[str],
              vectors: np.ndarray | None = None) -> list[list[Hit]]:
        results = []
        for n, (q, row) in enumerate(zip(queries, ranked)):
            hits = []
            for vid, score in row:
                i = self._rows[vid]
                passage = None if vectors is None else self._passage(i, vid, vectors[n])
                hits.append(Hit(len(hits) + 1, self._ids[i], float(score), self._titles[i], self._paths[i],
                                snippet(self._texts[i].as_py(), q, within=passage), passage))
            results.append(hits)
        return results

    def _passage(self, row: int, vid: int, query: np.ndarray) -> list[int] | None:
        """The [start, end) characters of the document's lead or span closest to the query (its other vectors, read
        back from the flat index: a hit found by BM25, or by its whole vector, gets one too)."""
        known = self._passages[row].as_py()
        if not known:
            return None
        ids = store.other_ids(vid, np.arange(len(known)))
        return known[int(np.argmax(store.vectors_for(self.snapshot.index, ids) @ query))]


def snippet(text: str, query: str, width: int = 200, within: list[int] | None = None) -> str:
    """A window around the first occurrence of the query's longest word in text[within] (default: all of it), else
    that part's opening."""
    lo, hi = within or (0, len(text))
    words = sorted(set(re.findall(r"\w{3,}", query.lower())), key=len, reverse=True)
    lower = text[:hi].lower()
    at = next((p for p in (lower.find(w, lo) for w in words) if p >= 0), lo)
    start = max(lo, min(at - width // 4, hi - width))  # a word near the part's end: the window ends there
    piece = " ".join(text[start:min(start + width, hi)].split())
    return ("…" if start else "") + piece + ("…" if min(start + width, hi) < len(text) else "")


def _by_score_then_vid(hits) -> list[tuple[int, float]]:
    """(vid, score) pairs best first, ties by vid (as lexical search and fusion break them)."""
    return sorted(hits, key=lambda hit: (-hit[1], hit[0]))
