"""Top-k search over an index folder, single queries or batches (pyserini-style run files)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import store
from .config import ModelConfig
from .embedder import Embedder


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    title: str
    path: str
    snippet: str

    def to_dict(self) -> dict:
        return asdict(self)


class ModelMismatch(Exception):
    pass


def index_model(folder: Path | str) -> ModelConfig:
    """The model config an index was built with, from its manifest."""
    manifest = store.read_manifest(Path(folder))
    if manifest is None:
        raise store.IndexFolderError(f"{folder}: no index here; build one with `longretr index`")
    return ModelConfig(**manifest["model"])


class Searcher:
    def __init__(self, folder: Path | str, embedder: Embedder | None = None) -> None:
        self.snapshot = store.load(folder)
        built = self.snapshot.manifest["model_fingerprint"]
        if embedder is None:
            embedder = Embedder(ModelConfig(**self.snapshot.manifest["model"]))
        if embedder.config.fingerprint() != built:
            raise ModelMismatch(
                f"{folder} was built with model {self.snapshot.manifest['model']['name']!r} (fingerprint "
                f"{built}); searching it with {embedder.config.name!r} ({embedder.config.fingerprint()}) "
                "would compare incompatible vectors. Search without --model, or re-index with this model."
            )
        self.embedder = embedder
        docs = self.snapshot.docs
        self._rows = {vid: i for i, vid in enumerate(docs.column("vid").to_pylist())}
        self._ids = docs.column("id").to_pylist()
        self._titles = docs.column("title").to_pylist()
        self._paths = docs.column("path").to_pylist()
        self._texts = docs.column("text")

    def search(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        vectors = self.embedder.encode_queries(queries)
        return self.search_vectors(vectors, queries, k)

    def search_vectors(self, vectors: np.ndarray, queries: list[str], k: int) -> list[list[Hit]]:
        k = max(1, min(k, self.snapshot.count))
        if self.snapshot.count == 0:
            return [[] for _ in queries]
        scores, vids = self.snapshot.index.search(np.ascontiguousarray(vectors, dtype="float32"), k)
        results = []
        for q, row_scores, row_vids in zip(queries, scores, vids):
            hits = []
            for score, vid in zip(row_scores, row_vids):
                if vid < 0:
                    continue
                i = self._rows[int(vid)]
                hits.append(Hit(len(hits) + 1, self._ids[i], float(score), self._titles[i], self._paths[i],
                                snippet(self._texts[i].as_py(), q)))
            results.append(hits)
        return results


def snippet(text: str, query: str, width: int = 200) -> str:
    """A window around the first occurrence of the query's longest word, else the opening."""
    words = sorted(set(re.findall(r"\w{3,}", query.lower())), key=len, reverse=True)
    lower = text.lower()
    at = next((p for p in (lower.find(w) for w in words) if p >= 0), 0)
    start = max(0, at - width // 4)
    piece = " ".join(text[start:start + width].split())
    return ("…" if start else "") + piece + ("…" if start + width < len(text) else "")


def read_queries(path: Path) -> list[tuple[str, str]]:
    """JSONL with id and text, or TSV id<TAB>text."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                row = json.loads(line)
                out.append((str(row["id"]), str(row["text"])))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: expected a JSON object with id and text ({e})") from e
        else:
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected id<TAB>text")
            out.append((parts[0], parts[1]))
    if not out:
        raise ValueError(f"{path}: no queries")
    return out


def trec_lines(qid: str, hits: list[Hit], tag: str) -> list[str]:
    return [f"{qid} Q0 {h.id} {h.rank} {h.score:.6f} {tag}" for h in hits]
