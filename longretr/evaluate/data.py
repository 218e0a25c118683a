"""Read LongEmbed in its published layout (the dwzhu/LongEmbed dataset repository):

    ROOT/<task folder>/corpus.jsonl    {"doc_id", "text"[, "context_length"]}
    ROOT/<task folder>/queries.jsonl   {"qid", "text"[, "context_length"]}
    ROOT/<task folder>/qrels.jsonl     {"qid", "doc_id"[, "context_length"]}

The synthetic tasks (passkey, needle) carry `context_length` on every row; each length is its own
split (mteb's test_256 ... test_32768) with its own candidate documents. The four real tasks are one
split each. The regenerated passkey/needle sets (synth.py) are written in the same layout.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Task:
    name: str  # short name used on the command line and in results
    folder: str  # folder in the published dataset
    mteb: str  # the same task in mteb
    synthetic: bool
    column: str  # column header in DiffEmbed's Table 2


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("passkey", "passkey", "LEMBPasskeyRetrieval", True, "Pk"),
    Task("needle", "needle", "LEMBNeedleRetrieval", True, "Nd"),
    Task("narrativeqa", "narrativeqa", "LEMBNarrativeQARetrieval", False, "NQA"),
    Task("qmsum", "qmsum", "LEMBQMSumRetrieval", False, "QMS"),
    Task("summ_screen_fd", "summ_screen_fd", "LEMBSummScreenFDRetrieval", False, "SFD"),
    Task("2wikimqa", "2wikimqa", "LEMBWikimQARetrieval", False, "WQA"),
)}
SYNTHETIC = tuple(n for n, t in TASKS.items() if t.synthetic)
REAL = tuple(n for n, t in TASKS.items() if not t.synthetic)
LENGTHS = (256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
HUB_ID = "dwzhu/LongEmbed"


class DataError(ValueError):
    """The data folder is missing something or has a malformed file; the message names it."""


@dataclass
class RetrievalSet:
    """One evaluation unit: candidate documents, queries and their relevant documents."""

    task: str
    split: str  # "test_256" ... for passkey/needle, "test" for the real tasks
    corpus: dict[str, str]  # doc_id -> text, in file order
    queries: dict[str, str]  # qid -> text
    qrels: dict[str, dict[str, int]]  # qid -> {doc_id: relevance}
    context_length: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)


def parse_tasks(spec: str | None, has_data: bool) -> list[str]:
    """'all', 'synthetic', 'real' or a comma list of task names."""
    if spec is None:
        return list(TASKS) if has_data else list(SYNTHETIC)
    groups = {"all": list(TASKS), "synthetic": list(SYNTHETIC), "real": list(REAL)}
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        if part in groups:
            names += groups[part]
        elif part in TASKS:
            names.append(part)
        else:
            raise DataError(f"unknown task {part!r}; known: {', '.join(TASKS)} (or all, synthetic, real)")
    if not names:  # "--tasks ," ran nothing and wrote an empty run folder as if it were a result
        raise DataError(f"--tasks {spec!r}: no task named; known: {', '.join(TASKS)} (or all, synthetic, real)")
    if not has_data and any(not TASKS[n].synthetic for n in names):
        raise DataError("the real tasks (narrativeqa, qmsum, summ_screen_fd, 2wikimqa) need --data: a local copy "
                        f"of the LongEmbed dataset or the hub id {HUB_ID}; offline only passkey and needle are "
                        "regenerated")
    return list(dict.fromkeys(names))


def parse_lengths(spec: str) -> tuple[int, ...]:
    try:
        lengths = tuple(int(x) for x in spec.split(",") if x.strip())
    except ValueError as e:
        raise DataError(f"--lengths {spec!r}: expected a comma list of integers such as 256,1024") from e
    bad = [x for x in lengths if x not in LENGTHS]
    if not lengths or bad:
        raise DataError(f"--lengths {spec!r}: LongEmbed's context lengths are {', '.join(map(str, LENGTHS))}")
    twice = sorted({x for x in lengths if lengths.count(x) > 1})
    if twice:  # a repeated length was one set loaded twice: a duplicate doc_id error naming the cache
        raise DataError(f"--lengths {spec!r}: {', '.join(map(str, twice))} given more than once")
    return tuple(sorted(lengths))  # the table's columns in order, and one cache key for one set of lengths


def resolve_data(spec: str | Path, tasks: list[str]) -> Path:
    """A local folder in the published layout; a hub id is downloaded (needs network and huggingface_hub)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DataError(f"--data {spec}: not a folder")
    if str(spec).count("/") != 1 or str(spec).startswith((".", "/", "~")):
        raise DataError(f"--data {spec}: no such folder (give a local copy of the LongEmbed dataset, "
                        f"or a hub id such as {HUB_ID})")
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(repo_id=str(spec), repo_type="dataset",
                                   allow_patterns=[f"{TASKS[t].folder}/*.jsonl" for t in tasks])
    except Exception as e:  # offline, unknown repo, no access: say which and why (on one line; hub errors have several)
        raise DataError(f"--data {spec}: no such local folder, and downloading it from the hub failed "
                        f"({type(e).__name__}: {' '.join(str(e).split())})") from e
    return Path(folder)


def read_jsonl(path: Path, required: tuple[str, ...], ids: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a JSON-lines file, each an object with the `required` fields; the `ids` fields must be strings
    or integers (a null doc_id was read as the document "None", then blamed on qrels.jsonl)."""
    if not path.is_file():
        raise DataError(f"{path}: missing (expected the published LongEmbed layout: "
                        "<task>/corpus.jsonl, queries.jsonl, qrels.jsonl)")
    rows = []
    try:
        f = path.open("rb")  # bytes, decoded per line: a bad byte is reported with its file and line
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from e
    with f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path} line {n}: not UTF-8 ({e.reason} at byte {e.start} of the line)") from e
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {n}: invalid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise DataError(f"{path} line {n}: expected a JSON object, got {type(row).__name__}")
            missing = [k for k in required if k not in row]
            if missing:
                raise DataError(f"{path} line {n}: missing field(s) {missing}; has {sorted(row)}")
            for key in ids:
                if isinstance(row[key], bool) or not isinstance(row[key], (str, int)):
                    raise DataError(f"{path} line {n}: {key} {json.dumps(row[key])} is not a string or an integer")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def load_task(root: Path, task: str, lengths: tuple[int, ...] = LENGTHS) -> list[RetrievalSet]:
    """All splits of one task; for passkey/needle one set per requested context length."""
    spec = TASKS[task]
    folder = root / spec.folder
    if not folder.is_dir():
        raise DataError(f"{folder}: missing task folder {spec.folder!r} in {root}")
    keys = ("context_length",) if spec.synthetic else ()
    corpus = read_jsonl(folder / "corpus.jsonl", ("doc_id", "text") + keys, ids=("doc_id",))
    queries = read_jsonl(folder / "queries.jsonl", ("qid", "text") + keys, ids=("qid",))
    qrels = read_jsonl(folder / "qrels.jsonl", ("qid", "doc_id") + keys, ids=("qid", "doc_id"))
    if not spec.synthetic:
        return [_build(folder, task, "test", None, corpus, queries, qrels)]
    sets = []
    for length in lengths:
        pick = [[r for r in rows if _int(r["context_length"], folder) == length] for rows in (corpus, queries, qrels)]
        if not any(pick):
            raise DataError(f"{folder}: no rows with context_length {length}; has "
                            f"{sorted({_int(r['context_length'], folder) for r in corpus})}")
        sets.append(_build(folder, task, f"test_{length}", length, *pick))
    return sets


def _int(value: object, folder: Path) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as e:
        raise DataError(f"{folder}: context_length {value!r} is not an integer") from e


def _build(folder: Path, task: str, split: str, length: int | None,
           corpus_rows: list[dict], query_rows: list[dict], qrel_rows: list[dict]) -> RetrievalSet:
    where = f"{folder} ({split})"
    corpus: dict[str, str] = {}
    for r in corpus_rows:
        doc_id = str(r["doc_id"])
        if doc_id in corpus:
            raise DataError(f"{where}: duplicate doc_id {doc_id!r} in corpus.jsonl")
        if not isinstance(r["text"], str):
            raise DataError(f"{where}: doc_id {doc_id!r} has non-text 'text'")
        corpus[doc_id] = r["text"]
    queries: dict[str, str] = {}
    for r in query_rows:
        qid = str(r["qid"])
        if qid in queries:
            raise DataError(f"{where}: duplicate qid {qid!r} in queries.jsonl")
        queries[qid] = str(r["text"])
    qrels: dict[str, dict[str, int]] = {}
    for r in qrel_rows:
        qid, doc_id = str(r["qid"]), str(r["doc_id"])
        if qid not in queries:
            raise DataError(f"{where}: qrels.jsonl names qid {qid!r}, which is not in queries.jsonl")
        if doc_id not in corpus:
            raise DataError(f"{where}: qrels.jsonl names doc_id {doc_id!r}, which is not in corpus.jsonl")
        try:  # LongEmbed's qrels have no score (all relevant); graded copies may
            qrels.setdefault(qid, {})[doc_id] = int(r.get("score", 1))
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: qrels.jsonl score {r['score']!r} for {qid!r} is not an integer") from e
    unjudged = [q for q in queries if q not in qrels]
    notes = []
    if unjudged:  # mteb drops them too; say so instead of scoring them as misses
        notes.append(f"{len(unjudged)} queries without qrels skipped")
        queries = {q: t for q, t in queries.items() if q in qrels}
    # A set without documents or judged queries has nothing to score: it crashed after the models had run
    # ("need at least one array to stack", no file named)
    if not corpus:
        raise DataError(f"{where}: no documents in corpus.jsonl for this set ({len(queries)} queries)")
    if not queries:
        raise DataError(f"{where}: no judged queries for this set ({len(query_rows)} rows in queries.jsonl, "
                        f"{len(qrel_rows)} in qrels.jsonl; {len(corpus)} documents in corpus.jsonl)")
    multi = sum(sum(r > 0 for r in d.values()) > 1 for d in qrels.values())
    if multi:
        notes.append(f"{multi} queries have several relevant documents (all kept)")
    return RetrievalSet(task, split, corpus, queries, qrels, length, notes)


def subsample(s: RetrievalSet, max_queries: int | None, max_docs: int | None, seed: int) -> RetrievalSet:
    """Fewer queries and candidates, reproducibly; the kept queries' relevant documents always stay."""
    rng = random.Random(f"{seed}-{s.task}-{s.split}")
    qids = list(s.queries)
    if max_queries is not None and len(qids) > max_queries:
        qids = sorted(rng.sample(qids, max_queries), key=qids.index)
    needed = {d for q in qids for d in s.qrels[q]}
    docs = list(s.corpus)
    if max_docs is not None and len(docs) > max(max_docs, len(needed)):
        others = [d for d in docs if d not in needed]
        keep = needed | set(rng.sample(others, max(0, max_docs - len(needed))))
        docs = [d for d in docs if d in keep]
    if len(qids) == len(s.queries) and len(docs) == len(s.corpus):
        return s
    keep_docs = set(docs)
    return RetrievalSet(s.task, s.split, {d: s.corpus[d] for d in docs}, {q: s.queries[q] for q in qids},
                        {q: {d: r for d, r in s.qrels[q].items() if d in keep_docs} for q in qids},
                        s.context_length, s.notes + [f"subsampled to {len(qids)} queries, {len(docs)} documents"])
