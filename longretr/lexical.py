"""The lexical index: BM25 (bm25s) over the documents' text, kept beside the dense vectors.

It is rebuilt from docs.parquet's text column at every commit (seconds for the 300-document demo
corpus, see README), so it follows exactly the same incremental and atomic rules as the vectors.
Saved as one folder per index version:

    lexical-NNNNNN/   bm25s arrays + vocab (bm25s' own format), vids.npy (docs row -> vid),
                      lexical.json (tokenizer settings, document count)
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import bm25s
import numpy as np

from .atomic import fsync_dir

# Stemmer-free word tokens (2+ word characters, lowercased) minus English stopwords: PyStemmer is
# not a dependency, and identifiers in technical text ("getattr", "urlopen") are not English words.
TOKENIZER = {"token_pattern": r"(?u)\b\w\w+\b", "lower": True, "stopwords": "en", "stemmer": None}
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
META = "lexical.json"


class LexicalIndexError(Exception):
    """A lexical index folder that cannot be used; the message names the folder and the problem."""


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, lower=TOKENIZER["lower"], token_pattern=TOKENIZER["token_pattern"],
                          stopwords=TOKENIZER["stopwords"], stemmer=None, return_ids=False, show_progress=False)


def _short_write(e: OSError) -> str:
    """numpy, which bm25s saves with, reports a full disk as a short write ("N requested and M written") without an
    errno; a short write to a file means no space (or no quota) is left."""
    if e.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(e)):
        return f"No space left on device (a short write: {e})"
    return str(e)


class LexicalIndex:
    """BM25 over the rows of one docs table; results are (vid, score) pairs."""

    def __init__(self, bm25: bm25s.BM25 | None, vids: np.ndarray) -> None:
        self.bm25 = bm25  # None where no document has a word (an empty corpus): bm25s cannot index that
        self.vids = vids

    @property
    def count(self) -> int:
        return len(self.vids)

    @classmethod
    def build(cls, texts: list[str], vids: np.ndarray | list[int]) -> LexicalIndex:
        vids = np.asarray(vids, dtype="int64")
        if len(texts) != len(vids):
            raise ValueError(f"{len(texts)} texts but {len(vids)} vids")
        tokens = tokenize(texts)
        if not any(tokens):  # no document has a word (none, or only stopwords): bm25s cannot index that
            return cls(None, vids)
        bm25 = bm25s.BM25(**BM25_PARAMS)
        bm25.index(tokens, show_progress=False)
        return cls(bm25, vids)

    def save(self, path: Path) -> None:
        """Write to a hidden temp folder, then rename: `path` either is complete or does not exist. A failed write (a
        full disk) removes the temp folder and raises an OSError naming `path`."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            if self.bm25 is not None:
                self.bm25.save(str(tmp), show_progress=False)
            np.save(tmp / "vids.npy", self.vids)
            meta = {"tokenizer": TOKENIZER, "bm25": BM25_PARAMS, "count": self.count, "bm25s": bm25s.__version__,
                    "scored": self.bm25 is not None}
            (tmp / META).write_text(json.dumps(meta, indent=2))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            fsync_dir(tmp)
            shutil.rmtree(path, ignore_errors=True)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException as e:  # Ctrl-C or SIGTERM mid-write too: no temp folder stays behind
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):
                raise OSError(e.errno, e.strerror or _short_write(e), str(path)) from e
            raise

    @classmethod
    def load(cls, path: Path) -> LexicalIndex:
        if not path.is_dir():
            raise LexicalIndexError(f"{path}: lexical index folder missing")
        try:
            meta = json.loads((path / META).read_text())
            vids = np.load(path / "vids.npy", allow_pickle=False)
            if meta.get("tokenizer") != TOKENIZER:
                raise LexicalIndexError(f"{path}: built with another tokenizer ({meta.get('tokenizer')}); re-index")
            scored = meta.get("scored", meta["count"] > 0)  # (older indexes: any document, and so scores)
            bm25 = bm25s.BM25.load(str(path), show_progress=False) if scored else None
        except LexicalIndexError:
            raise
        except Exception as e:  # json, numpy and bm25s each raise their own types for damaged files
            raise LexicalIndexError(f"{path}: truncated or not a longretr lexical index ({type(e).__name__}: {e})") \
                from e
        num_docs = len(vids) if bm25 is None else int(bm25.scores["num_docs"])
        if num_docs != len(vids) or meta["count"] != len(vids):
            raise LexicalIndexError(f"{path}: BM25 holds {num_docs} documents but vids.npy has {len(vids)}")
        if bm25 is not None:
            _check_matrix(path, bm25.scores, num_docs, bm25.vocab_dict)
        return cls(bm25, vids)

    def search(self, queries: list[str], k: int, within: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """Top-k (vid, score) per query, best first; only documents sharing a term with the query
        (a zero BM25 score says nothing), and only those with a vid in `within` if given; ties broken by vid so
        results are stable."""
        out: list[list[tuple[int, float]]] = []
        allowed = None if within is None else np.isin(self.vids, within)
        for tokens in tokenize(queries):
            ids = self.bm25.get_tokens_ids(tokens) if self.bm25 is not None else []
            if not ids or k < 1:
                out.append([])
                continue
            scores = np.asarray(self.bm25.get_scores_from_ids(ids), dtype="float64")
            hit = np.flatnonzero(scores > 0 if allowed is None else (scores > 0) & allowed)
            if len(hit) > k:  # partial sort first; the boundary score's ties are kept, then cut below
                cut = np.partition(scores[hit], len(hit) - k)[len(hit) - k]
                hit = hit[scores[hit] >= cut]
            order = np.lexsort((self.vids[hit], -scores[hit]))[:k]
            out.append([(int(self.vids[hit[i]]), float(scores[hit[i]])) for i in order])
        return out


def _check_matrix(path: Path, scores: dict, num_docs: int, vocab: dict) -> None:
    """The BM25 score matrix (CSC: a column of documents per term) and the vocabulary's term ids are whole: bytes
    overwritten in place (the file's length unchanged) made searches fail with an IndexError or a ValueError, or score
    NaN. One numpy pass over them."""
    data, indices, indptr = scores["data"], scores["indices"], scores["indptr"]
    terms = len(indptr) - 1  # bm25s adds "" as one id more, with no column
    ids = np.fromiter(vocab.values(), dtype="int64", count=len(vocab))
    if "" in vocab:
        ids = ids[ids != vocab[""]]
    if len(ids) and (ids.min() < 0 or ids.max() >= terms):
        raise LexicalIndexError(f"{path}: damaged vocabulary (term ids beyond the {terms} terms of its score matrix)")
    whole = (data.ndim == indices.ndim == indptr.ndim == 1 and len(data) == len(indices) and len(indptr) > 0
             and indptr[0] == 0 and indptr[-1] == len(indices) and bool(np.all(np.diff(indptr) >= 0))
             and (not len(indices) or (indices.min() >= 0 and indices.max() < num_docs))
             and bool(np.all(np.isfinite(data))) and (not len(data) or data.min() >= 0))
    if not whole:
        raise LexicalIndexError(f"{path}: damaged BM25 score matrix (its entries do not fit {num_docs} documents)")
