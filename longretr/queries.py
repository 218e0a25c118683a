"""Queries in, hits out: the Hit record a search returns, query files (`--queries`), TREC run lines, and the checks
on what a caller passes. Nothing here imports torch, faiss or a model, so `longretr search --server` starts at once.
"""

from __future__ import annotations

import json
import numbers
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote


@dataclass
class Hit:
    rank: int
    id: str
    score: float
    title: str
    path: str
    snippet: str
    # [start, end) characters of the document's lead or span closest to the query (dense and hybrid modes); None
    # for a document without them, in lexical mode, or in an index that keeps no passages
    passage: list[int] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Filter:
    """Which documents a search may return (both conditions when both are given): a path starting with
    `path_prefix`, an id in `ids`, compared in Unicode NFC (`nfc`). Hashable, so the server batches queries with the
    same filter together."""

    path_prefix: str | None = None
    ids: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.path_prefix is not None and not isinstance(self.path_prefix, str):
            raise TypeError(f"path_prefix must be a string, got {type(self.path_prefix).__name__}")
        if self.path_prefix == "":
            raise ValueError("path_prefix must be a non-empty string, got ''")
        if self.path_prefix is not None:
            object.__setattr__(self, "path_prefix", nfc(self.path_prefix))
        if self.ids is not None:
            object.__setattr__(self, "ids", frozenset(map(nfc, _id_set(self.ids))))

    def keep(self, doc_id: str, path: str) -> bool:
        return ((self.path_prefix is None or nfc(path).startswith(self.path_prefix))
                and (self.ids is None or nfc(doc_id) in self.ids))

    def to_dict(self) -> dict:
        """The server's JSON `filter` object."""
        return {**({"path_prefix": self.path_prefix} if self.path_prefix is not None else {}),
                **({"ids": sorted(self.ids)} if self.ids is not None else {})}


def nfc(text: str) -> str:
    """Ids and paths as compared with what a user types: file names copied from macOS are stored decomposed ("e" +
    U+0301), a keyboard types the composed "é"; both look the same and would not match."""
    return unicodedata.normalize("NFC", text)


def _id_set(ids) -> frozenset[str]:
    """`ids` as a frozenset of str. Read once into a list first: a generator that was checked before being converted
    would be empty by then, and the filter would silently keep nothing."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(f"ids must be a collection of id strings, got {type(ids).__name__} {ids!r:.80}")
    items = list(ids)
    if not all(isinstance(i, str) for i in items):
        raise TypeError(f"ids must be a collection of id strings, got {items!r:.80}")
    if not items:
        raise ValueError("ids is empty: no document could match")
    return frozenset(items)


def encodes(text: str) -> bool:
    """Whether `text` is valid Unicode, so it can be written as UTF-8: a command line's undecodable bytes and a JSON
    "\\udc00" are lone surrogates, which the tokenizer, arrow and httpx all refuse."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_texts(texts: Iterable[str], what: str = "texts") -> list[str]:
    """`texts` as a list of str; else a TypeError naming the item (a ValueError for one that is not valid Unicode).
    Without this the tokenizer fails obscurely on None, bytes, numbers or lone surrogates (or, in a query, formats
    them as text), and a bare string is read as one-character texts."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a list of strings, got one {type(texts).__name__}; wrap it in a list")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a str, got {type(text).__name__}")
        if not encodes(text):
            raise ValueError(f"{what}[{i}] is not valid Unicode (it contains a lone surrogate)")
    return texts


def check_k(k: int) -> int:
    """k as an int, at least 1: a float, str or bool is a TypeError here rather than an error from faiss or numpy (or,
    for True, one hit)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an integer, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    return int(k)  # a numpy integer, which faiss's search refuses, becomes an int


def read_queries(path: Path | str) -> list[tuple[str, str]]:
    """JSONL with id and text, or TSV id<TAB>text (a first line `id<TAB>text`, in any case, is a header). An id may
    appear once: a repeated one gave the TREC run two ranked lists for it."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a BOM (Excel, Notepad) is not in the id
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from e
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from e
    out, seen = [], {}
    for n, line in enumerate(lines, 1):
        if not line.strip() or (n == 1 and _tsv_header(path, line)):
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                row = json.loads(line)
                qid, text = row["id"], row["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: expected a JSON object with id and text ({e})") from e
            if not isinstance(text, str) or qid is None or isinstance(qid, (bool, list, dict)):  # not "None" searched
                raise ValueError(f"{path}:{n}: expected a string text and a string or number id, "
                                 f"got id {qid!r} and text {text!r}")
            out.append((str(qid), text))
        else:
            parts = line.split("\t", 1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected id<TAB>text")
            out.append((parts[0], parts[1]))
        if not out[-1][1].strip():
            raise ValueError(f"{path}:{n}: query {out[-1][0]!r} has no text")
        if out[-1][0] in seen:
            raise ValueError(f"{path}:{n}: query id {out[-1][0]!r} repeated (first on line {seen[out[-1][0]]})")
        seen[out[-1][0]] = n
    if not out:
        raise ValueError(f"{path}: no queries")
    return out


def _tsv_header(path: Path, line: str) -> bool:
    """Whether a TSV query file's first line is the header `id<TAB>text` (any case), not a query with the id "id"."""
    return path.suffix.lower() != ".jsonl" and [part.strip().lower() for part in line.split("\t")] == ["id", "text"]


def trec_lines(qid: str, hits: list[Hit], tag: str) -> list[str]:
    """TREC run lines; whitespace and "%" in ids are percent-encoded, since TREC columns are split on whitespace."""
    return [f"{trec_id(qid)} Q0 {trec_id(h.id)} {h.rank} {h.score:.6f} {tag}" for h in hits]


def trec_id(text: str) -> str:
    return re.sub(r"[\s%]", lambda m: quote(m.group(), safe=""), text)
