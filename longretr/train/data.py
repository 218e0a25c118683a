"""Training data: triplet JSONL in the public E5 / echo-embeddings layout, plus builders that make
triplets from ReasonAug (../shared/data/reasonaug), long-document pairs from local raw text, plain-language
pairs from Debian's manual pages and package descriptions, and copies of each with BM25-mined hard negatives
(`*-mined.jsonl`) or, given an embedder, negatives it ranks high itself (`*-dmined.jsonl`), and long-document
pairs whose positive is the window that holds the query (`longdoc-train-windows.jsonl`), and section headings paired
with their section's body (`section-*.jsonl`).

Triplet row: {"query", "positive", "negative" | "negatives", "instruction"?, "dataset"?}.
Python's own documentation is never a source: the demo corpus is evaluated on it.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import random
import re
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..lexical import LexicalIndex

if TYPE_CHECKING:  # the embedder loads torch; building data without one does not need it
    from ..embedder import Embedder

REASONAUG_Q2Q = "Given a problem, retrieve a problem that applies the same concept, with its solution"
REASONAUG_Q2C = "Given a problem, retrieve the definition of the concept it applies"
LONGDOC = "Given a search query, retrieve the documents that answer it"


@dataclass
class Triplet:
    query: str
    positive: str
    negatives: list[str]
    instruction: str = ""
    dataset: str = "default"
    extra: dict = field(default_factory=dict)

    @property
    def query_text(self) -> str:
        """The query as the model reads it: `"{instruction}; {query}"`, or the bare query without an instruction."""
        return f"{self.instruction}; {self.query}" if self.instruction else self.query

    def to_json(self) -> str:
        return json.dumps({"query": self.query, "positive": self.positive, "negatives": self.negatives,
                           "instruction": self.instruction, "dataset": self.dataset}, ensure_ascii=False)


def read_data_text(path: Path) -> str:
    """A training or validation data file's text; a folder, a missing file or bytes that are not UTF-8 are named."""
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise ValueError(f"{path}: a folder, not a data file (list its .jsonl files instead)") from None
    except FileNotFoundError:
        built = path.parent.name == "train" and path.parent.parent.name == "data"
        hint = " (data/train/ is built by `python scripts/build_train_data.py`: README, Training)" if built else ""
        raise FileNotFoundError(f"{path}: no such data file{hint}") from None
    except OSError as e:  # no permission, an I/O error: the file named, not a traceback
        raise ValueError(f"{path}: cannot read the data file ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path} line {line}: not UTF-8 (byte {raw[e.start]:#04x})") from None


def read_triplets(path: Path, instruction: str | None = "") -> list[Triplet]:
    """The file's triplets; a row without an "instruction" key gets `instruction` (the trainer gives the model
    config's query_instruction, which search puts before every query: a model trained on bare queries would be
    searched with instructed ones; None leaves it None, for the trainer to fill in). An explicit "" keeps the query
    bare."""
    out = []
    for n, line in enumerate(read_data_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            negs = row.get("negatives")
            if negs is None:  # "negative": "" is a (refused) empty negative, not none
                negs = [] if row.get("negative") is None else [row["negative"]]
            t = Triplet(row["query"], row["positive"], negs, row.get("instruction", instruction),
                        row.get("dataset", path.stem))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}:{n}: expected a JSON object with query, positive, negative(s) ({e})") from e
        # checked here, not by the tokenizer mid-run; a string of negatives would be read as one per character
        if not all(isinstance(x, str) and x.strip() for x in (t.query, t.positive)):
            raise ValueError(f"{path}:{n}: query and positive must be non-empty strings")
        if not isinstance(t.negatives, list) or not all(isinstance(x, str) for x in t.negatives):
            raise ValueError(f"{path}:{n}: negatives must be a list of strings (or negative one string)")
        if not all(x.strip() for x in t.negatives):  # an empty document would be trained on as a negative
            raise ValueError(f"{path}:{n}: negatives must be non-empty strings")
        if "instruction" in row and not isinstance(row["instruction"], str) or not isinstance(t.dataset, str):
            raise ValueError(f"{path}:{n}: instruction and dataset must be strings")
        out.append(t)
    if not out:
        raise ValueError(f"{path}: no triplets")
    return out


def write_jsonl(path: Path, rows: list[Triplet]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(r.to_json() + "\n" for r in rows))
    tmp.replace(path)


# ---- ReasonAug -------------------------------------------------------------------------------

def reasonaug_triplets(folder: Path, val_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """Question -> same-concept problem+solution (hard negative: another concept of the same domain),
    and question -> its concept's definition (hard negative: another definition). Split by concept."""
    pairs = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines() if line.strip()]
    defs = {d["concept"]: d["definition"] for d in map(json.loads, (folder / "definitions.jsonl").open())}
    rng = random.Random(seed)
    concepts = sorted({p["concept"] for p in pairs})
    rng.shuffle(concepts)
    val_concepts = set(concepts[: max(1, int(len(concepts) * val_fraction))])
    by_concept, by_domain = defaultdict(list), defaultdict(set)
    for p in pairs:
        by_concept[p["concept"]].append(p)
        by_domain[p["domain"]].add(p["concept"])

    def build(split_concepts: set[str]) -> list[Triplet]:
        rows = []
        for p in pairs:
            c = p["concept"]
            if c not in split_concepts:
                continue
            others = sorted((by_domain[p["domain"]] & split_concepts) - {c}) or sorted(split_concepts - {c})
            same = [q for q in by_concept[c] if q["id"] != p["id"]]
            if same and others:
                pos, neg = rng.choice(same), rng.choice(by_concept[rng.choice(others)])
                rows.append(Triplet(p["problem"], f"{pos['problem']}\n\n{pos['solution']}",
                                    [f"{neg['problem']}\n\n{neg['solution']}"], REASONAUG_Q2Q, "reasonaug-q2q",
                                    {"concept": c}))
            neg_defs = [o for o in others if o in defs]
            if c in defs and neg_defs:
                rows.append(Triplet(p["problem"], defs[c], [defs[rng.choice(neg_defs)]], REASONAUG_Q2C,
                                    "reasonaug-q2c", {"concept": c}))
        rng.shuffle(rows)
        return rows

    return build(set(concepts) - val_concepts), build(val_concepts)


# ---- raw long documents ------------------------------------------------------------------------

def linux_doc_texts(root: Path = Path("/usr/share/doc/linux-doc-6.1/Documentation")) -> Iterator[tuple[str, str]]:
    """(name, text) for each .rst/.txt file of the kernel documentation (Debian package linux-doc-6.1)."""
    for path in sorted(root.rglob("*.gz")):
        if not re.search(r"\.(rst|txt)\.gz$", path.name) or path.parts[len(root.parts)] == "translations":
            continue
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        yield str(path.relative_to(root)), text


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        if tag in ("h1", "h2", "h3", "h4"):
            self.parts.append("\n\n# ")
        if tag in ("p", "div", "br", "li", "pre", "tr"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if tag in ("h1", "h2", "h3", "h4"):
            self.parts.append("\n")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def debian_reference_texts(root: Path = Path("/usr/share/debian-reference")) -> Iterator[tuple[str, str]]:
    """(name, text) per section of the Debian Reference (Debian package debian-reference-en)."""
    for path in sorted(root.glob("*.en.html")):
        parser = _HTMLText()
        parser.feed(path.read_text(errors="replace"))
        text = html.unescape("".join(parser.parts))
        for n, section in enumerate(re.split(r"\n\n# (?=\d+\.\d+\.\s)", text)):
            if len(section) > 1500:
                yield f"{path.stem}#{n}", section.strip()


# Debian packages whose manual pages (C library, system calls, file formats, conventions; Perl's core modules, the
# nearest thing here to a standard library's reference) become plain-language pairs: a page's one-line NAME summary
# ("sort an array", "module for manipulations of tar archives") as query, the rest of the page as positive.
MANPAGE_PACKAGES = ("manpages", "manpages-dev", "perl-doc")


def _render_manpage(path: str) -> str:
    # man-db's own renderer (groff), 100 columns; writing to a pipe, man already drops bold/underline overstrikes
    cmd = ["man", "--no-justification", "--no-hyphenation", "--local-file", "--encoding=UTF-8", path]
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "MANWIDTH": "100"}).stdout


def manpage_texts(packages: tuple[str, ...] = MANPAGE_PACKAGES) -> Iterator[tuple[str, str, str]]:
    """(name, summary, text) per manual page of `packages`: the NAME section's description as summary, the page
    without that description as text (so a query must match the body, not its copy). Aliases (.so) are skipped."""
    listed = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True)
    if listed.returncode:
        raise FileNotFoundError(f"manual pages: {listed.stderr.strip()} (apt-get install {' '.join(packages)})")
    paths = [p for p in listed.stdout.split() if re.search(r"/man/man\d/[^/]+\.gz$", p) and not os.path.islink(p)]
    paths = [p for p in sorted(set(paths)) if not gzip.decompress(Path(p).read_bytes()).startswith(b".so ")]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        for path, page in zip(paths, pool.map(_render_manpage, paths)):
            if parsed := split_manpage(page):
                yield (Path(path).name.removesuffix(".gz"), *parsed)


def split_manpage(page: str) -> tuple[str, str] | None:
    """(summary, page without it) from a rendered manual page; None without a `NAME: names - summary` section."""
    found = re.search(r"^NAME\n(.*?)\n\n", page, re.S | re.M)
    if not found or " - " not in found.group(1):
        return None
    names, summary = " ".join(found.group(1).split()).split(" - ", 1)
    return summary.strip(), (page[: found.start()] + f"NAME\n       {names}\n\n" + page[found.end():]).strip()


def manpage_triplets(pages: list[tuple[str, str, str]], val_fraction: float = 0.05,
                     seed: int = 0) -> tuple[list, list]:
    """Summary -> its page, another page as negative (mined later); split by page."""
    pages = [p for p in pages if len(p[1]) > 8 and len(p[2]) > 1000]
    return _summary_pairs(pages, "manpage", val_fraction, seed)


def _summary_pairs(items: list[tuple[str, str, str]], dataset: str, val_fraction: float,
                   seed: int) -> tuple[list, list]:
    """(name, summary, text) items, shuffled and split by item, as summary -> text triplets with another item's
    text as negative."""
    rng = random.Random(seed)
    items = list(items)  # the caller's list keeps its order
    rng.shuffle(items)
    n_val = max(1, int(len(items) * val_fraction))

    def build(part: list) -> list[Triplet]:
        return [Triplet(summary, text, [part[(i + rng.randrange(1, len(part))) % len(part)][2]], LONGDOC, dataset,
                        {"name": name}) for i, (name, summary, text) in enumerate(part)]

    return build(items[n_val:]), build(items[:n_val])


# Debian's package descriptions: a one-line summary ("utility to recursively search files for patterns") and a
# long description, for ~60k packages, offline once apt has the English translations file.
APT_LISTS = Path("/var/lib/apt/lists")


def package_descriptions(lists: Path = APT_LISTS) -> Iterator[tuple[str, str, str]]:
    """(package, summary, long description) from apt's English descriptions (`*_i18n_Translation-en*`)."""
    files = sorted(lists.glob("*_i18n_Translation-en*"))
    if not files:
        raise FileNotFoundError(f"{lists}: no *_i18n_Translation-en file (apt-get update -o Acquire::Languages=en)")
    for path in files:  # apt's helper reads every compression apt writes (.lz4, .gz, .xz, none)
        listing = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], capture_output=True, text=True,
                                 check=True).stdout
        for block in listing.split("\n\n"):
            name = re.search(r"^Package: (\S+)", block, re.M)
            found = re.search(r"^Description-en: (.*)\n((?: .*\n?)*)", block, re.M)
            if name and found:
                lines = [ln[1:] for ln in found.group(2).splitlines()]
                body = "\n".join("" if ln == "." else ln for ln in lines).strip()
                yield name.group(1), found.group(1).strip(), body


def package_triplets(packages: list[tuple[str, str, str]], val_fraction: float = 0.05,
                     seed: int = 0) -> tuple[list, list]:
    """Summary -> long description, another package's as negative; split by package. Packages about Python are
    left out (the demo corpus is Python's documentation), and of packages sharing a description's first paragraph
    (a library and its -dev, -doc, ... packages) only the first by name is kept."""
    kept, seen = [], set()
    for name, summary, body in sorted(packages):
        first = body.split("\n\n")[0]
        if len(summary) <= 8 or len(body) < 300 or "python" in f"{name} {summary} {body}".lower() or first in seen:
            continue
        seen.add(first)
        kept.append((name, summary, body))
    return _summary_pairs(kept, "package", val_fraction, seed)


def _title(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines()]
    for i, line in enumerate(lines[:80]):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.startswith("# "):
            return line[2:].strip()
        if line and re.fullmatch(r"([=\-~^*#+])\1{2,}", nxt) and not re.fullmatch(r"([=\-~^*#+])\1+", line):
            return line
    return ""


def _sentences(text: str) -> list[str]:
    flat = " ".join(text.split())
    return [s for s in re.split(r"(?<=[.!?])\s+", flat) if 60 <= len(s) <= 300 and not re.search(r"[|=*`]{3}", s)]


def longdoc_triplets(docs: list[tuple[str, str]], per_doc: int = 2, val_fraction: float = 0.05,
                     seed: int = 0, min_chars: int = 2000) -> tuple[list, list]:
    """Known-item pairs: a document's title, or a sentence copied from its body, as the query; the
    whole document as positive; another document of the same source folder as hard negative."""
    rng = random.Random(seed)
    docs = [(n, t) for n, t in docs if len(t) >= min_chars]
    rng.shuffle(docs)
    n_val = max(1, int(len(docs) * val_fraction))
    groups = defaultdict(list)
    for i, (name, _) in enumerate(docs):
        groups[name.split("/")[0]].append(i)

    def build(indices: list[int]) -> list[Triplet]:
        allowed = set(indices)
        rows = []
        for i in indices:
            name, text = docs[i]
            pool = [j for j in groups[name.split("/")[0]] if j != i and j in allowed] or [j for j in indices if j != i]
            queries = []
            title = _title(text)
            if title and len(title) > 8:
                queries.append(title)
            sents = _sentences(text)
            rng.shuffle(sents)
            queries += sents[: max(0, per_doc - len(queries))]
            for q in queries[:per_doc]:
                rows.append(Triplet(q, text, [docs[rng.choice(pool)][1]], LONGDOC, "longdoc", {"name": name}))
        rng.shuffle(rows)
        return rows

    return build(list(range(n_val, len(docs)))), build(list(range(n_val)))


# Generic headings ("Introduction", "Examples") say nothing a query would; a heading needs this many words to be one.
SECTION_MIN_WORDS = 3
RST_RULE = r"([=\-~^*#+`'])\1{2,}"
SECTION_NUMBER = r"^\d+(?:\.\d+)*[.)]?\s+"  # "2. ", "11) ", "1.2.3. "


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) per section of a kernel (reStructuredText: a line over an underline of one repeated mark) or
    Debian Reference (`# 1.2.3. Heading`, from the HTML) document; the body runs to the next heading, without it."""
    lines = text.splitlines()
    heads = []  # (heading line, first body line, heading)
    for i, line in enumerate(lines):
        head, nxt = line.strip(), lines[i + 1].strip() if i + 1 < len(lines) else ""
        if head.startswith("# "):
            heads.append((i, i + 1, re.sub(SECTION_NUMBER, "", head[2:]).strip()))
        elif head and re.fullmatch(RST_RULE, nxt) and not re.fullmatch(RST_RULE, head) and len(nxt) >= len(head) - 2:
            heads.append((i, i + 2, re.sub(SECTION_NUMBER, "", head).strip()))
    out = []
    for k, (_, first, head) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        body = "\n".join(lines[first:end]).strip()
        out.append((head, re.sub(rf"\n\s*{RST_RULE}\s*$", "", body).strip()))  # the next heading's overline
    return out


def section_triplets(docs: list[tuple[str, str]], names: set[str], per_doc: int = 6, min_chars: int = 300,
                     max_chars: int = 1500, seed: int = 0) -> list[Triplet]:
    """Heading -> its section's body (the heading left out), another section of the same document as hard negative:
    a short description matched to the one passage of a long document that it describes, as a query about one
    detail of a page must be. Only the documents named in `names` (a longdoc split's), so validation stays unseen."""
    rng = random.Random(seed)
    rows = []
    for name, text in docs:
        if name not in names:
            continue
        found = [(h, b) for h, b in sections(text)
                 if len(h.split()) >= SECTION_MIN_WORDS and len(h) <= 120 and min_chars <= len(b) <= max_chars]
        if len(found) < 2:
            continue
        rng.shuffle(found)
        for i, (head, body) in enumerate(found[:per_doc]):
            other = found[(i + rng.randrange(1, len(found))) % len(found)][1]
            rows.append(Triplet(head, body, [other], LONGDOC, "section", {"name": name}))
    rng.shuffle(rows)
    return rows


WINDOW_CHARS = 1400  # kernel/Debian text: a median of ~370 tokens, so nearly every window fits a 512-token cut


def window_positives(rows: list[Triplet], max_chars: int = WINDOW_CHARS, seed: int = 0) -> list[Triplet]:
    """Long-document pairs as a short training length sees them. Training cuts a document to its first
    `max_doc_tokens`, so a query copied from further in no longer occurs in its positive (at 512 tokens, about 30% of
    `longdoc_triplets`' rows). Where the query lies beyond the first `max_chars`, the positive becomes a `max_chars`
    window of the document starting at a line start before the query, which ends in the window's first half; the
    hard negatives become windows of the same size at random places in theirs, so a window alone does not mark a
    positive. Other rows are kept as they are."""
    rng = random.Random(seed)
    out = []
    for t in rows:
        hit = re.search(r"\s+".join(map(re.escape, t.query.split())), t.positive)
        if hit is None or hit.end() <= max_chars or hit.end() - hit.start() > max_chars:
            out.append(t)
            continue
        earliest = min(hit.start(), hit.end() - max_chars // 2)  # a query spread over blank space may be long
        start = rng.randint(earliest, hit.start())
        line = t.positive.rfind("\n", 0, start) + 1
        start = line if line >= earliest else start
        negatives = [_window(n, max_chars, rng) for n in t.negatives]
        out.append(Triplet(t.query, t.positive[start:start + max_chars], negatives, t.instruction, t.dataset, t.extra))
    return out


def _window(text: str, size: int, rng: random.Random) -> str:
    start = rng.randint(0, max(0, len(text) - size))
    line = text.rfind("\n", 0, start) + 1
    return text[line if start - line < size // 4 else start:][:size]


# ---- mined hard negatives -------------------------------------------------------------------

Ranker = Callable[[list[Triplet], list[str]], list[list[int]]]  # per triplet's query, text indices best first


def bm25_ranker(rows: list[Triplet], texts: list[str], k: int = 10) -> list[list[int]]:
    """BM25 on the bare query (its instruction is the same words for a whole dataset)."""
    index = LexicalIndex.build(texts, np.arange(len(texts)))
    return [[int(v) for v, _ in hits] for hits in index.search([t.query for t in rows], k=k)]


def dense_ranker(embedder: Embedder, max_doc_tokens: int, k: int = 10, max_ratio: float | None = None) -> Ranker:
    """Rank with an embedder's whole-text vectors, texts cut to `max_doc_tokens` as training sees them, each query
    with its triplet's instruction in front as training gives it (not the model config's instruction).

    With `max_ratio`, texts scoring above `max_ratio` x the cosine of the triplet's own positive (when it is among
    `texts`) are left out: "positive-aware" mining (NV-Retriever, arXiv 2407.15831), since a text the embedder puts
    that close to the positive may be a second right answer. Without it the negatives the default ranked highest
    cost dense MRR@10 0.06 (docs/training-studies.md, "Dense-mined negatives")."""
    def rank(rows: list[Triplet], texts: list[str]) -> list[list[int]]:
        docs = embedder.encode_texts(texts, max_tokens=max_doc_tokens)
        scores = embedder.encode_texts([t.query_text for t in rows]) @ docs.T
        if max_ratio is not None:
            at, cut = {text: i for i, text in enumerate(texts)}, 0
            for row, t in zip(scores, rows):
                if t.positive in at:
                    close = row > max_ratio * row[at[t.positive]]
                    cut += int(close.sum() - close[at[t.positive]]) > 0
                    row[close] = -np.inf
            print(f"positive-aware mining: {cut:,} of {len(rows):,} queries lose texts above {max_ratio} x their "
                  "positive's cosine", file=sys.stderr)
        order = np.argsort(-scores, axis=1)[:, :k]
        return [[int(v) for v in o if scores[i, v] > -np.inf] for i, o in enumerate(order)]
    return rank


def mine_negatives(rows: list[Triplet], group: str, rank: Ranker = bm25_ranker) -> list[Triplet]:
    """Put first among each triplet's negatives the text `rank` (BM25 unless given) puts highest for its query
    among the positives of the same dataset from another `extra[group]` (concept or document), so no sibling of
    the positive (nor a copy of it under another name) becomes a negative. The old negatives follow; the order of
    rows is kept. BM25-mined negatives changed no validation score at 35 CPU minutes (docs/training-studies.md,
    "What a CPU-hour buys"); `dense_ranker` mines the ones the embedder itself confuses."""
    out = list(rows)
    for dataset in sorted({t.dataset for t in rows}):
        at = [i for i, t in enumerate(rows) if t.dataset == dataset]
        pool = list(dict.fromkeys((rows[i].positive, rows[i].extra[group]) for i in at))
        for i, hits in zip(at, rank([rows[i] for i in at], [text for text, _ in pool])):
            t = rows[i]
            pick = next((pool[v][0] for v in hits if pool[v][1] != t.extra[group] and pool[v][0] != t.positive),
                        None)
            if pick is not None:
                out[i] = Triplet(t.query, t.positive, [pick] + t.negatives, t.instruction, t.dataset, t.extra)
    return out


def build_all(out: Path, reasonaug: Path, seed: int = 0, dense: Ranker | None = None,
              dense_tag: str = "dmined") -> dict[str, int]:
    """Write every training / validation file into `out`; return row counts. With `dense` (a `dense_ranker`),
    also *-train-{dense_tag}.jsonl: the same triplets with the embedder's own hardest negative first."""
    ra_train, ra_val = reasonaug_triplets(reasonaug, seed=seed)
    raw = list(linux_doc_texts()) + list(debian_reference_texts())
    if not raw:
        raise FileNotFoundError("no raw text: install the Debian packages linux-doc-6.1 and debian-reference-en")
    ld_train, ld_val = longdoc_triplets(raw, seed=seed)
    mp_train, mp_val = manpage_triplets(list(manpage_texts()), seed=seed)
    files = {"reasonaug-train.jsonl": ra_train, "reasonaug-val.jsonl": ra_val,
             "longdoc-train.jsonl": ld_train, "longdoc-val.jsonl": ld_val,
             "manpage-train.jsonl": mp_train, "manpage-val.jsonl": mp_val,
             "reasonaug-train-mined.jsonl": mine_negatives(ra_train, "concept"),
             "longdoc-train-mined.jsonl": mine_negatives(ld_train, "name"),
             "longdoc-train-windows.jsonl": window_positives(ld_train, seed=seed),
             "manpage-train-mined.jsonl": mine_negatives(mp_train, "name"),
             "section-train.jsonl": section_triplets(raw, {t.extra["name"] for t in ld_train}, seed=seed),
             "section-val.jsonl": section_triplets(raw, {t.extra["name"] for t in ld_val}, seed=seed)}
    if dense is not None:
        files |= {f"reasonaug-train-{dense_tag}.jsonl": mine_negatives(ra_train, "concept", dense),
                  f"longdoc-train-{dense_tag}.jsonl": mine_negatives(ld_train, "name", dense),
                  f"manpage-train-{dense_tag}.jsonl": mine_negatives(mp_train, "name", dense)}
    try:  # only the study configs/train/cpu-2g-packages.toml reads these; the default's recipe builds without them
        pk_train, pk_val = package_triplets(list(package_descriptions()), seed=seed)
        files |= {"package-train.jsonl": pk_train, "package-val.jsonl": pk_val,
                  "package-train-mined.jsonl": mine_negatives(pk_train, "name")}
    except FileNotFoundError as e:
        print(f"package-*.jsonl not written: {e}", file=sys.stderr)
    for name, rows in files.items():
        write_jsonl(out / name, rows)
    raw_path = out / "raw-text.jsonl"
    raw_path.write_text("".join(json.dumps({"id": n, "text": t}) + "\n" for n, t in raw))
    return {**{k: len(v) for k, v in files.items()}, "raw-text.jsonl": len(raw)}
