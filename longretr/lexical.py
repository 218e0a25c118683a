"""The lexical index: BM25 over the documents' text, kept beside the dense vectors.

What is stored is each document's term counts; the BM25 weights are derived from them when the index is first
searched (one numpy pass). A commit tokenizes only the documents it adds: a kept document's counts are carried over
by its vid and the sha256 of its text, so removing one document of 20,000 tokenizes nothing (`make bench-memory`).
Saved as one folder per index version, plain numpy and JSON files:

    lexical-NNNNNN/   lexical.json   format, tokenizer and BM25 settings, document count, crc32 of every file below
                      vids.npy       row -> vid (the docs table's rows, in its order)
                      sha256.npy     row -> sha256 of the document's text (hex): a kept row is reused only unchanged
                      tf-indptr.npy  row r's terms are tf-terms[indptr[r]:indptr[r + 1]] (CSR, int64)
                      tf-terms.npy   term ids (int32), ascending within a row
                      tf-counts.npy  how often the row holds each (int32)
                      terms.json     the vocabulary: term id -> term (terms no document holds are dropped)

Folders written before format 2 (bm25s' own save: its score matrix and vocabulary) are still searched; the next
`longretr index` (indexer._damaged_derived) or commit tokenizes all text once to write them in this format.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import zlib
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path

import bm25s
import numpy as np
import pyarrow as pa

from .atomic import fsync_dir
from .corpus import text_sha256

# Stemmer-free word tokens (2+ word characters, lowercased) minus English stopwords: PyStemmer is
# not a dependency, and identifiers in technical text ("getattr", "urlopen") are not English words.
TOKENIZER = {"token_pattern": r"(?u)\b\w\w+\b", "lower": True, "stopwords": "en", "stemmer": None}
BM25_PARAMS = {"k1": 1.5, "b": 0.75, "method": "lucene"}
META = "lexical.json"
FORMAT = 2
PIECE_CHARS = 1 << 20
ARRAYS = ("vids", "sha256", "tf-indptr", "tf-terms", "tf-counts")
TERMS = "terms.json"


class LexicalIndexError(Exception):
    """A lexical index folder that cannot be used; the message names the folder and the problem."""


def tokenize(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, lower=TOKENIZER["lower"], token_pattern=TOKENIZER["token_pattern"],
                          stopwords=TOKENIZER["stopwords"], stemmer=None, return_ids=False, show_progress=False)


def _short_write(e: OSError) -> str:
    """numpy reports a full disk as a short write ("N requested and M written") without an errno; a short write to a
    file means no space (or no quota) is left."""
    if e.errno is None and re.fullmatch(r"\d+ requested and \d+ written", str(e)):
        return f"No space left on device (a short write: {e})"
    return str(e)


@dataclasses.dataclass(eq=False)
class LexicalIndex:
    """BM25 over the rows of one docs table, from their term counts; results are (vid, score) pairs. `legacy` marks a
    format-1 folder: no counts, its bm25s index read as saved (searched as it is, never carried over)."""

    vids: np.ndarray  # int64, row -> vid
    keys: np.ndarray  # S64, row -> sha256 of the row's text
    indptr: np.ndarray  # int64, rows + 1
    terms: np.ndarray  # int32
    tf: np.ndarray  # int32
    vocab: list[str]
    params: dict = dataclasses.field(default_factory=lambda: dict(BM25_PARAMS))
    legacy: bool = False

    @property
    def count(self) -> int:
        return len(self.vids)

    @classmethod
    def build(cls, texts: list[str], vids: np.ndarray | list[int]) -> LexicalIndex:
        vids = np.asarray(vids, dtype="int64")
        if len(texts) != len(vids):
            raise ValueError(f"{len(texts)} texts but {len(vids)} vids")
        keys = np.array([text_sha256(t) for t in texts], dtype="S64")
        return cls.update(None, vids, keys, lambda rows: texts)  # no previous index: every row is new, in order

    @classmethod
    def from_docs(cls, docs: pa.Table, previous: LexicalIndex | None) -> LexicalIndex:
        """For a docs table (vid, sha256, text columns): `previous`'s counts of its rows with the same vid and text,
        the rest tokenized; only the new rows' text is read out of the table."""
        texts = docs.column("text")

        def texts_of(rows: list[int]) -> Iterable[str]:  # a few at a time: not the corpus's text as Python strings
            for at in range(0, len(rows), 256):
                yield from texts.take(pa.array(rows[at:at + 256], type=pa.int64())).to_pylist()

        keys = np.array(docs.column("sha256").to_pylist(), dtype="S64")
        return cls.update(previous, docs.column("vid").to_numpy(), keys, texts_of)

    @classmethod
    def update(cls, previous: LexicalIndex | None, vids: np.ndarray, keys: np.ndarray,
               texts_of: Callable[[list[int]], Iterable[str]]) -> LexicalIndex:
        """Rows (vids, keys); `texts_of(rows)` gives the texts of the rows `previous` cannot supply."""
        vids = np.asarray(vids, dtype="int64")
        reusable = previous is not None and not previous.legacy
        source = _rows_in(previous, vids, keys) if reusable else np.full(len(vids), -1, dtype="int64")
        new = np.flatnonzero(source < 0)
        vocab = dict(zip(previous.vocab, range(len(previous.vocab)))) if reusable else {}
        fresh_lengths, fresh_terms, fresh_tf = _count(texts_of(new.tolist()), vocab)
        # every row's (lengths, start in its source arrays): reused rows in previous', new rows in the fresh ones
        lengths = np.zeros(len(vids), dtype="int64")
        starts = np.zeros(len(vids), dtype="int64")
        reused = np.flatnonzero(source >= 0)
        if len(reused):
            lengths[reused] = np.diff(previous.indptr)[source[reused]]
            starts[reused] = previous.indptr[source[reused]]
        lengths[new] = fresh_lengths
        starts[new] = np.concatenate([[0], np.cumsum(fresh_lengths)[:-1]]).astype("int64") if len(new) else []
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype("int64")
        at = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])  # each entry's place in its source
        from_old = np.repeat(source >= 0, lengths)
        terms = np.empty(indptr[-1], dtype="int32")
        tf = np.empty(indptr[-1], dtype="int32")
        if len(reused):
            terms[from_old], tf[from_old] = previous.terms[at[from_old]], previous.tf[at[from_old]]
        terms[~from_old], tf[~from_old] = fresh_terms[at[~from_old]], fresh_tf[at[~from_old]]
        # terms no row holds any more (their documents went) leave the vocabulary, which is renumbered in order
        held = np.zeros(len(vocab), dtype=bool)
        held[terms] = True
        renumber = np.cumsum(held) - 1
        words = list(vocab)
        return cls(vids, np.asarray(keys, dtype="S64"), indptr, renumber[terms].astype("int32"), tf,
                   [words[i] for i in np.flatnonzero(held)])

    def with_params(self, **params) -> LexicalIndex:
        """The same counts under other BM25 settings (k1, b)."""
        if self.legacy:
            raise ValueError("a format-1 lexical index has no term counts to weigh again; build it again")
        return dataclasses.replace(self, params={**self.params, **params})

    @cached_property
    def bm25(self) -> bm25s.BM25 | None:
        """The BM25 weights (Lucene's variant, as bm25s computes them), as a bm25s index whose search sums them over a
        query's terms; None where no document has a word (bm25s cannot hold that)."""
        if not len(self.terms):
            return None
        k1, b, n = self.params["k1"], self.params["b"], self.count
        rows = np.repeat(np.arange(n), np.diff(self.indptr))
        length = np.bincount(rows, weights=self.tf, minlength=n)  # a document's tokens
        df = np.bincount(self.terms, minlength=len(self.vocab))
        idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
        tf = self.tf.astype("float64")
        weight = idf[self.terms] * tf / (k1 * ((1 - b) + b * length[rows] / length.mean()) + tf)
        by_term = np.argsort(self.terms, kind="stable")  # bm25s reads a column (documents) per term
        bm25 = bm25s.BM25(**self.params)
        bm25.scores = {"data": weight[by_term].astype(bm25.dtype), "indices": rows[by_term].astype(bm25.int_dtype),
                       "indptr": np.concatenate([[0], np.cumsum(df)]).astype("int64"), "num_docs": n}
        bm25.vocab_dict = dict(zip(self.vocab, range(len(self.vocab))))
        bm25.nonoccurrence_array = None  # (Lucene's variant has none)
        return bm25

    def save(self, path: Path) -> None:
        """Write to a hidden temp folder, then rename: `path` either is complete or does not exist. A failed write (a
        full disk) removes the temp folder and raises an OSError naming `path`."""
        if self.legacy:
            raise ValueError(f"{path}: a format-1 lexical index has no term counts to save; build it again")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir(parents=True)
            crc = {}
            for name, array in zip(ARRAYS, (self.vids, self.keys, self.indptr, self.terms, self.tf)):
                np.save(tmp / f"{name}.npy", array)
                crc[f"{name}.npy"] = _crc(tmp / f"{name}.npy")
            (tmp / TERMS).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")  # not the locale's
            crc[TERMS] = _crc(tmp / TERMS)
            meta = {"format": FORMAT, "tokenizer": TOKENIZER, "bm25": self.params, "count": self.count,
                    "terms": len(self.vocab), "crc32": crc}
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
            if meta.get("tokenizer") != TOKENIZER:
                raise LexicalIndexError(f"{path}: built with another tokenizer ({meta.get('tokenizer')}); re-index")
            if meta.get("format", 1) == 1:
                return _load_legacy(path, meta)
            if meta["format"] != FORMAT:
                raise LexicalIndexError(f"{path}: format {meta['format']!r}, not {FORMAT}; re-index")
            if set(meta["crc32"]) != {f"{name}.npy" for name in ARRAYS} | {TERMS}:  # (lexical.json has none)
                raise LexicalIndexError(f"{path}: {META} does not list the checksum of each of its files")
            for name, crc in meta["crc32"].items():  # any byte changed: a damaged file is never carried over
                if _crc(path / name) != crc:
                    raise LexicalIndexError(f"{path}: {name} is damaged or truncated (its checksum is not {META}'s)")
            params = meta["bm25"]  # checked here, not at the first search
            if set(params) != set(BM25_PARAMS) or params["method"] != "lucene" or \
                    not all(type(params[p]) in (int, float) for p in ("k1", "b")):
                raise LexicalIndexError(f"{path}: damaged BM25 settings in {META} ({params})")
            arrays = [np.load(path / f"{name}.npy", allow_pickle=False) for name in ARRAYS]
            vocab = json.loads((path / TERMS).read_text(encoding="utf-8"))
            index = cls(*arrays, vocab, params=params)
            if not (len(index.keys) == len(index.indptr) - 1 == meta["count"] == index.count
                    and len(index.terms) == len(index.tf) == index.indptr[-1] and len(vocab) == meta["terms"]):
                raise LexicalIndexError(f"{path}: its files disagree on the number of documents or terms")
        except LexicalIndexError:
            raise
        except Exception as e:  # json and numpy each raise their own types for damaged or missing files (and a
            # lexical.json, which has no checksum, may lack a key)
            raise LexicalIndexError(f"{path}: truncated or not a longretr lexical index ({type(e).__name__}: {e})") \
                from e
        return index

    def search(self, queries: list[str], k: int, within: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """Top-k (vid, score) per query, best first; only documents sharing a term with the query
        (a zero BM25 score says nothing), and only those with a vid in `within` if given; ties broken by vid so
        results are stable."""
        out: list[list[tuple[int, float]]] = []
        allowed = None if within is None else np.isin(self.vids, within)
        bm25 = self.bm25
        for tokens in tokenize(queries):
            ids = bm25.get_tokens_ids(tokens) if bm25 is not None else []
            if not ids or k < 1:
                out.append([])
                continue
            scores = np.asarray(bm25.get_scores_from_ids(ids), dtype="float64")
            hit = np.flatnonzero(scores > 0 if allowed is None else (scores > 0) & allowed)
            if len(hit) > k:  # partial sort first; the boundary score's ties are kept, then cut below
                cut = np.partition(scores[hit], len(hit) - k)[len(hit) - k]
                hit = hit[scores[hit] >= cut]
            order = np.lexsort((self.vids[hit], -scores[hit]))[:k]
            out.append([(int(self.vids[hit[i]]), float(scores[hit[i]])) for i in order])
        return out


def _rows_in(previous: LexicalIndex, vids: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Per row (vid, key), the row of `previous` with the same vid and key, or -1."""
    if not previous.count or not len(vids):
        return np.full(len(vids), -1, dtype="int64")
    order = np.argsort(previous.vids, kind="stable")
    at = order[np.minimum(np.searchsorted(previous.vids, vids, sorter=order), len(order) - 1)]
    same = (previous.vids[at] == vids) & (previous.keys[at] == np.asarray(keys, dtype="S64"))
    return np.where(same, at, -1).astype("int64")


def _count(texts: Iterable[str], vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per text: how many distinct terms it has, then its term ids (ascending) and their counts, all texts' one after
    another. New terms are added to `vocab`. Tokenized about PIECE_CHARS characters at a time: tokens are Python
    strings, several times the size of their text."""
    ids: list[list[np.ndarray]] = []  # per text, its pieces' term ids
    batch: list[str] = []
    owners: list[int] = []

    def flush() -> None:
        for owner, tokens in zip(owners, tokenize(batch) if batch else []):
            ids[owner].append(np.fromiter((vocab.setdefault(w, len(vocab)) for w in tokens), dtype="int32",
                                          count=len(tokens)))
        batch.clear()
        owners.clear()

    chars = 0
    for row, text in enumerate(texts):
        ids.append([])
        if len(text) > PIECE_CHARS and TOKENIZER["lower"]:  # lowercased whole, as tokenize would: a capital sigma's
            text = text.lower()  # lowercase depends on the letters past the punctuation a piece may end at
        for start in range(0, len(text), PIECE_CHARS):
            piece = _piece(text, start)
            if not piece:
                continue
            batch.append(piece)
            owners.append(row)
            chars += len(piece)
            if chars >= PIECE_CHARS:
                flush()
                chars = 0
    flush()
    counted = [np.unique(np.concatenate(x) if x else np.zeros(0, "int32"), return_counts=True) for x in ids]
    distinct = np.array([len(t) for t, _ in counted], dtype="int64")
    if not counted:
        return distinct, np.zeros(0, "int32"), np.zeros(0, "int32")
    return (distinct, np.concatenate([t for t, _ in counted]).astype("int32"),
            np.concatenate([c for _, c in counted]).astype("int32"))


def _piece(text: str, start: int) -> str:
    """The PIECE_CHARS characters of `text` from `start`, moved to word boundaries (a token never has a space, a line
    end or another non-word character in it): a piece starts after the last non-word character before `start`, and
    ends at the last before start + PIECE_CHARS. (A word longer than a piece is cut.)"""
    def boundary(i: int) -> int:
        if i <= 0 or i >= len(text):
            return max(0, min(i, len(text)))
        cut = _LAST_NON_WORD.match(text, max(0, i - PIECE_CHARS), i)
        return cut.end() if cut else i
    return text[boundary(start):boundary(start + PIECE_CHARS)]


# matches up to a window's last non-word character: not only spaces and line ends, which minified JSON, tab-separated
# values or Japanese text may lack for a megabyte
_LAST_NON_WORD = re.compile(r"(?s).*\W")


def _crc(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            crc = zlib.crc32(chunk, crc)
    return crc


def _load_legacy(path: Path, meta: dict) -> LexicalIndex:
    """A format-1 folder: bm25s' saved score matrix and vocabulary, checked whole (bytes overwritten in place made
    searches fail or score NaN)."""
    vids = np.load(path / "vids.npy", allow_pickle=False)
    scored = meta.get("scored", meta["count"] > 0)  # (the oldest indexes: any document, and so scores)
    bm25 = bm25s.BM25.load(str(path), show_progress=False) if scored else None
    num_docs = len(vids) if bm25 is None else int(bm25.scores["num_docs"])
    if num_docs != len(vids) or meta["count"] != len(vids):
        raise LexicalIndexError(f"{path}: BM25 holds {num_docs} documents but vids.npy has {len(vids)}")
    if bm25 is not None:
        _check_matrix(path, bm25.scores, num_docs, bm25.vocab_dict)
    none = np.zeros(0, dtype="int32")
    index = LexicalIndex(vids, np.zeros(len(vids), dtype="S64"), np.zeros(len(vids) + 1, dtype="int64"), none, none,
                         [], params=meta.get("bm25", BM25_PARAMS), legacy=True)
    index.__dict__["bm25"] = bm25  # the cached_property's value: not derived from counts
    return index


def _check_matrix(path: Path, scores: dict, num_docs: int, vocab: dict) -> None:
    """A format-1 folder's BM25 score matrix (CSC: a column of documents per term) and the vocabulary's term ids are
    whole. One numpy pass over them."""
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
