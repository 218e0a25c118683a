"""Offline regeneration of LongEmbed's two synthetic tasks, written in the published layout.

Followed from LongEmbed (Zhu et al. 2024, section 3.2, footnotes 2-3, Figures 3 and 7):
- context lengths 256 ... 32768 "tokens", realised as a word cap of length x 0.75 per document;
- per length one shared pool of candidate documents (100 in the paper) and queries (50), each query
  with exactly one relevant document; every candidate holds one needle at a random position;
- passkey: filler is the repeated "The grass is green. The sky is blue. The sun is yellow. Here we go.
  There and back again.", the needle "\\n{name}'s pass key is {key}. Remember it. {key} is the pass key
  for {name}.\\n", the query "what is the passkey for {name}?";
- needle: every candidate is the same long prose text with one fact inserted at a random sentence
  boundary; the query is the fact's question.
Where this differs (the needle facts, the prose, the names) is recorded in generation.json and the README.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..config import longretr_home
from .needles import FIRST_NAMES, LAST_NAMES, NEEDLES

GENERATOR_VERSION = 1
PASSKEY_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
PASSKEY_NEEDLE = "{name}'s pass key is {key}. Remember it. {key} is the pass key for {name}."
PASSKEY_QUERY = "what is the passkey for {name}?"
WORDS_PER_TOKEN = 0.75  # LongEmbed footnote 2: word cap = context length x 0.75

# The needle haystack: public-domain prose from a Debian package that no longretr training or demo
# data uses (training: linux-doc-6.1 and debian-reference-en; demo corpus: the Python docs).
DEFAULT_FILLER = Path("/usr/share/doc/jargon-text/jargon.txt.gz")
DEFAULT_FILLER_PACKAGE = "jargon-text"
FILLER_INSTALL_HINT = "run `make longembed-filler` (apt-get install jargon-text) or pass --filler FILE"

DIFFERENCES = [
    "needle facts and questions: 100 pairs written for longretr in LongEmbed's style (the paper's GPT-4 "
    "pairs are only in the published dataset)",
    "needle haystack: the Jargon File 4.4.7 (public domain, Debian package jargon-text) instead of Paul "
    "Graham's essays, which are not available offline",
    "passkey names: drawn from a fixed list of 60 first x 60 last names; keys are random 4-5 digit numbers",
    "length: a document's word cap is length x 0.75 as in the paper; its token count depends on the "
    "tokenizer and is reported per model",
]


# How many candidates one context length can have: each needs its own fact (needle) or name (passkey).
CAPACITY = {"needle": len(NEEDLES), "passkey": len(FIRST_NAMES) * len(LAST_NAMES)}


class FillerError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class Filler:
    """Prose split into sentences; `breaks[i]` is true when sentence i ends a paragraph."""

    sentences: list[str]
    breaks: list[bool]
    source: dict

    @property
    def words(self) -> int:
        return sum(len(s.split()) for s in self.sentences)


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z\"'(\[])")
_TABLE_CHARS = set("│┌┐└┘├┤┬┴┼─═║╔╗╚╝")


def load_filler(path: Path | None = None) -> Filler:
    """Sentences of a local prose file (.txt or .txt.gz); the Jargon File by default."""
    path = Path(path) if path else DEFAULT_FILLER
    if not path.is_file():  # a folder was reported as "not found"
        problem = "is not a file" if path.exists() else "not found"
        raise FillerError(f"needle filler {path} {problem}; {FILLER_INSTALL_HINT}")
    raw = path.read_bytes()
    try:
        text = (gzip.decompress(raw) if path.suffix == ".gz" else raw).decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FillerError(f"needle filler {path}: not a readable UTF-8 text (or .gz) file ({e})") from e
    start = text.find("Welcome to the Jargon File\n", text.find("Welcome to the Jargon File") + 1)
    if start > 0:  # the Jargon File: skip the table of contents
        text = text[start:]
    sentences, breaks = _split(text)
    if sum(len(s.split()) for s in sentences) < 1000:
        raise FillerError(f"needle filler {path}: only {len(sentences)} sentences; need a long prose text")
    source = {"path": str(path), "sha256": hashlib.sha256(raw).hexdigest(), "words": None}
    if path == DEFAULT_FILLER:
        source.update(package=DEFAULT_FILLER_PACKAGE, version=_dpkg_version(DEFAULT_FILLER_PACKAGE),
                      title="The Jargon File 4.4.7 (public domain)")
    filler = Filler(sentences, breaks, source)
    source["words"] = filler.words
    return filler


def _split(text: str) -> tuple[list[str], list[bool]]:
    sentences: list[str] = []
    breaks: list[bool] = []
    for para in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in para.splitlines() if ln.strip() and not (set(ln) & _TABLE_CHARS)]
        flat = " ".join(" ".join(lines).split())
        if len(flat.split()) < 4:  # headings, lone entry names
            continue
        parts = [p.strip() for p in _SENTENCE_END.split(flat) if p.strip()]
        sentences += parts
        breaks += [False] * (len(parts) - 1) + [True]
    return sentences, breaks


def _dpkg_version(package: str) -> str | None:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _haystack(sentences: list[str], breaks: list[bool], budget: int) -> tuple[list[str], list[bool]]:
    """The longest prefix of whole sentences within `budget` words (cycling if the text is short)."""
    out, out_breaks, used, i = [], [], 0, 0
    while True:
        s = sentences[i % len(sentences)]
        n = len(s.split())
        if used + n > budget:
            return out, out_breaks
        out.append(s)
        out_breaks.append(breaks[i % len(sentences)])
        used += n
        i += 1


def _insert(sentences: list[str], breaks: list[bool], needle: str, rng: random.Random) -> tuple[str, float]:
    """Join the haystack with the needle on its own line at a uniformly random sentence boundary."""
    at = rng.randint(0, len(sentences))
    parts: list[str] = []
    for i, (s, br) in enumerate(zip(sentences, breaks)):
        if i == at:
            parts.append(f"\n{needle}\n")
        parts.append(s + ("\n" if br else " "))
    if at == len(sentences):
        parts.append(f"\n{needle}\n")
    words_before = sum(len(s.split()) for s in sentences[:at])
    total = sum(len(s.split()) for s in sentences) or 1
    return "".join(parts).strip(), words_before / total


def generate(task: str, out: Path, lengths: tuple[int, ...], candidates: int, queries: int, seed: int,
             filler: Filler | None = None) -> list[dict]:
    """Write out/<task>/{corpus,queries,qrels}.jsonl; returns per-document metadata."""
    if task not in ("passkey", "needle"):
        raise ValueError(f"only passkey and needle are generated, not {task!r}")
    limit = CAPACITY[task]
    if not 1 <= queries <= candidates <= limit:
        raise ValueError(f"{task}: need 1 <= queries ({queries}) <= candidates ({candidates}) <= {limit}")
    if task == "passkey":
        base = PASSKEY_FILLER.split(". ")
        sentences = [s if s.endswith(".") else s + "." for s in base]
        breaks = [False] * len(sentences)
    else:
        if filler is None:
            filler = load_filler()
        sentences, breaks = filler.sentences, filler.breaks
    corpus, query_rows, qrels, meta = [], [], [], []
    for length in lengths:
        rng = random.Random(f"longembed-{task}-{seed}-{length}")
        if task == "passkey":
            names = rng.sample([f"{f} {la}" for f in FIRST_NAMES for la in LAST_NAMES], candidates)
            keys = [str(rng.randint(1000, 99999)) for _ in names]
            items = [(PASSKEY_NEEDLE.format(name=n, key=k), PASSKEY_QUERY.format(name=n), {"name": n, "key": k})
                     for n, k in zip(names, keys)]
        else:
            items = [(fact, question, {"fact": fact}) for fact, question in rng.sample(NEEDLES, candidates)]
        asked = set(rng.sample(range(candidates), queries))
        cap = int(length * WORDS_PER_TOKEN)
        for i, (needle, question, info) in enumerate(items):
            hay, hay_breaks = _haystack(sentences, breaks, cap - len(needle.split()))
            text, depth = _insert(hay, hay_breaks, needle, rng)
            doc_id = f"{task}_{length}_doc{i:03d}"
            corpus.append({"doc_id": doc_id, "text": text, "context_length": length})
            meta.append({"doc_id": doc_id, "context_length": length, "depth": round(depth, 4),
                         "words": len(text.split()), **info})
            if i in asked:
                qid = f"{task}_{length}_q{i:03d}"
                query_rows.append({"qid": qid, "text": question, "context_length": length})
                qrels.append({"qid": qid, "doc_id": doc_id, "context_length": length})
    folder = out / task
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("corpus", corpus), ("queries", query_rows), ("qrels", qrels), ("meta", meta)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return meta


def synthetic_sets(tasks: list[str], lengths: tuple[int, ...], candidates: int, queries: int, seed: int,
                   filler_path: Path | None = None, cache: Path | None = None) -> Path:
    """Generate (or reuse from the cache) the passkey/needle sets; returns the folder in published layout."""
    tasks = [t for t in tasks if t in ("passkey", "needle")]
    filler = load_filler(filler_path) if "needle" in tasks else None
    settings = {"generator_version": GENERATOR_VERSION, "tasks": sorted(tasks), "lengths": list(lengths),
                "candidates": candidates, "queries": queries, "seed": seed,
                "filler_sha256": filler.source["sha256"] if filler else None}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    root = (cache or longretr_home() / "longembed") / f"synth-{key}"
    if (root / "generation.json").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".synth-"))
    try:
        for task in tasks:
            generate(task, tmp, lengths, candidates, queries, seed, filler)
        info = {**settings, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "words_per_token": WORDS_PER_TOKEN, "passkey_filler": PASSKEY_FILLER,
                "passkey_needle": PASSKEY_NEEDLE, "passkey_query": PASSKEY_QUERY,
                "needle_filler": filler.source if filler else None, "differences_from_longembed": DIFFERENCES}
        (tmp / "generation.json").write_text(json.dumps(info, indent=2) + "\n")
        try:
            os.rename(tmp, root)  # atomic: a half-written set is never visible
        except OSError:  # a concurrent run won the race
            if not (root / "generation.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
