"""One evaluation run: build or load the sets, score them with every system, write the outputs."""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..config import DTYPE_NAMES, load_config
from ..fusion import DEFAULT_RANKING, fuse_ranked
from ..machine import describe, load_average
from .baselines import BASELINES, MINILM_MAX_CHUNK, DenseScorer, Scorer
from .data import LENGTHS, TASKS, RetrievalSet, load_task, resolve_data, subsample
from .metrics import Qrels, Run, acc_at_1, mean, ndcg_at_k, rank
from .report import write_outputs, write_qrels, write_trec
from .synth import CAPACITY, synthetic_sets

# quick: what `make bench-longembed` runs, sized for 30 minutes on this project's 2-core CPU with both
# longretr configs and both baselines. Lengths up to 8k took 6.8 min at load 1-2; 16k roughly doubles
# the tokens (about 0.5M per longretr model), so >4k has two columns. Every candidate is the target of one
# query: queries are nearly free, and candidates are what costs.
# full: LongEmbed as published (100 candidates, 50 queries, lengths up to 32k).
PROFILES = {
    "quick": {"lengths": (256, 512, 1024, 2048, 4096, 8192, 16384), "candidates": 8, "queries": 8},
    "full": {"lengths": LENGTHS, "candidates": 100, "queries": 50},
}
DEFAULT_MODELS = ("default", "gemma3-270m-causal")
TREC_DEPTH = 100
QRELS_FOLDER = "qrels"  # runs/qrels/<task>.qrels, beside runs/<system>/: no system may take the name
# Tokens of real-task documents past which the plan warns that the run is long: about an hour at the 1,713 tokens/s
# the default reached in bf16 on a Xeon with AMX (README, Evaluation)
QUICK_REAL_TOKENS = 6_000_000


@dataclass
class Settings:
    profile: str = "quick"
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    tasks: list[str] = field(default_factory=lambda: ["passkey", "needle"])
    lengths: tuple[int, ...] = PROFILES["quick"]["lengths"]
    candidates: int | None = PROFILES["quick"]["candidates"]  # per length; None = as published
    queries: int | None = PROFILES["quick"]["queries"]
    seed: int = 0
    data: str | None = None  # published copy (folder or hub id); None = regenerate passkey/needle
    filler: str | None = None
    dtype: str | None = None
    minilm_chunk: int = 256
    out: str = "results/longembed"
    run: str | None = None

    def validate(self) -> None:
        # Everything that can be checked is checked here, before sets are generated or a model loads: a bad value
        # found later fails after minutes of encoding (--dtype, --minilm-chunk did).
        if not self.tasks:
            raise ValueError("no task to run: give --tasks passkey, needle, ...")
        if self.data is not None and not str(self.data).strip():  # was read as "no --data" and regenerated
            raise ValueError("--data '': give a local copy of LongEmbed or a hub id, or leave --data out")
        bad = [x for x in self.lengths if x not in LENGTHS]
        if bad or not self.lengths:
            raise ValueError(f"lengths {bad} are not LongEmbed context lengths ({', '.join(map(str, LENGTHS))})")
        if len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"lengths {list(self.lengths)}: a length is given more than once")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; known: {', '.join(BASELINES)}")
        if self.queries is not None and self.queries < 1:
            raise ValueError("--candidates and --queries must be at least 1")
        if self.candidates is not None and self.candidates < 2:  # one candidate: every system scores 100
            raise ValueError("--candidates must be at least 2 (with one, every system ranks it first) and --queries "
                             "at least 1")
        if self.data is None and (self.candidates is None or self.queries is None):
            raise ValueError("regenerated sets need --candidates and --queries")
        if self.data is None and self.queries > self.candidates:
            raise ValueError(f"--queries ({self.queries}) cannot exceed --candidates ({self.candidates}): "
                             "each query has its own relevant candidate")
        if self.data is None:
            for task in self.tasks:
                if task in CAPACITY and self.candidates > CAPACITY[task]:
                    raise ValueError(f"--candidates {self.candidates}: regenerated {task} sets have at most "
                                     f"{CAPACITY[task]} candidates per length (one fact or name each)")
        if not self.models and not self.baselines:
            raise ValueError("nothing to evaluate: give at least one --model or baseline")
        if "minilm" in self.baselines and not 8 <= self.minilm_chunk <= MINILM_MAX_CHUNK:
            raise ValueError(f"--minilm-chunk must be between 8 and {MINILM_MAX_CHUNK} word pieces, "
                             f"got {self.minilm_chunk}")
        if self.dtype is not None and self.models and self.dtype not in DTYPE_NAMES:
            raise ValueError(f"--dtype {self.dtype!r}: expected auto or one of {', '.join(DTYPE_NAMES[1:])}")
        if self.run is not None:
            check_run_name(self.run)
        out = Path(self.out)
        existing = next(p for p in (out, *out.parents) if p.exists())  # a file here failed at the first TREC write
        if not existing.is_dir():
            raise ValueError(f"--out {self.out}: {existing} is not a folder")
        for m in self.models:  # a typo should fail now, not after the sets are built
            load_config(m)


def check_run_name(name: str) -> None:
    # A leading dot is refused as well: `.NAME.partial` and `.NAME.old` are the work folders of run NAME, which a
    # run of that name deletes; a run called that would be deleted with them.
    if not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
        raise ValueError(f"--run {name!r}: use letters, digits, '.', '-' and '_' only (not dots alone, "
                         "nor a leading dot)")


def build_sets(st: Settings) -> tuple[list[RetrievalSet], dict]:
    """The sets to score, and a description of where they came from."""
    published: dict[tuple[str, str], tuple[int, int]] = {}  # (task, split) -> documents, queries in the data
    if st.data:
        root = resolve_data(st.data, st.tasks)
        sets = []
        for s in (s for t in st.tasks for s in load_task(root, t, st.lengths)):
            published[s.task, s.split] = len(s.corpus), len(s.queries)
            # A real task keeps its whole corpus: cut to 8 candidates, every relevant document was in the top 10 and
            # nDCG@10 was inflated beside the paper's rows. Queries are cheap, candidates are what costs.
            sets.append(subsample(s, st.queries, st.candidates if TASKS[s.task].synthetic else None, st.seed))
        info = {"source": f"published LongEmbed copy at {root}", "source_short": "published data", "root": str(root)}
    else:
        root = synthetic_sets(st.tasks, st.lengths, st.candidates, st.queries, st.seed,
                              Path(st.filler) if st.filler else None)
        sets = [s for t in st.tasks for s in load_task(root, t, st.lengths)]
        generation = json.loads((root / "generation.json").read_text())
        filler = generation.get("needle_filler") or {}
        info = {"source": "regenerated offline (longretr.evaluate.synth)"
                          + (f"; needle filler {filler.get('title') or filler.get('path')}" if filler else ""),
                "source_short": "regenerated", "root": str(root), "generation": generation}
    info["sets"] = [{"task": s.task, "split": s.split, "context_length": s.context_length, "documents": len(s.corpus),
                     "queries": len(s.queries), "chance": round(100 * chance_at_1(s), 2),
                     "words_mean": round(sum(len(t.split()) for t in s.corpus.values()) / len(s.corpus), 1),
                     **_in_data(published.get((s.task, s.split))), "notes": s.notes} for s in sets]
    return sets, info


def _in_data(counts: tuple[int, int] | None) -> dict:
    """A published set's candidates and queries before any cut (the table states a cut against them)."""
    return {} if counts is None else {"documents_in_data": counts[0], "queries_in_data": counts[1]}


def chance_at_1(s: RetrievalSet) -> float:
    """Acc@1 of a random ranking: per query its relevant documents over the candidates, averaged. Taken from the
    sets as run, not from --candidates: a published copy (or the test fixture) may have fewer candidates."""
    shares = [sum(r > 0 for r in s.qrels[q].values()) / len(s.corpus) for q in s.queries]
    return sum(shares) / len(shares) if shares else 0.0


def plan_lines(st: Settings, sets: list[RetrievalSet], info: dict) -> list[str]:
    """What will run, and what it costs: words to encode per dense model and, from the throughput an
    earlier run measured on this machine, the time that takes."""
    words = sum(len(t.split()) for s in sets for t in s.corpus.values())
    tokens = words / 0.75
    pool = ("as published" if st.candidates is None else
            f"{st.candidates} candidates and {st.queries} queries per length (LongEmbed: 100 and 50)")
    lines = [
        f"profile {st.profile}: tasks {', '.join(st.tasks)}; lengths {', '.join(map(str, st.lengths))}; {pool}",
        f"data: {info['source']}",
        f"systems: {', '.join([*st.models, *st.baselines])}; {len(sets)} sets, "
        f"{sum(len(s.corpus) for s in sets)} documents, {words:,} words (about {tokens:,.0f} tokens at "
        "LongEmbed's 0.75 words per token) for each dense model to encode",
    ]
    lines += real_task_lines(sets, tokens)
    longest = max((len(t.split()) / 0.75 for s in sets for t in s.corpus.values()), default=0)
    caveat = (" (more: over 8k tokens the full-attention layers grow quadratically)"
              if max(st.lengths) > 8192 or longest > 8192 else "")
    for model, (rate, run) in measured_rates(Path(st.out), st.models).items():
        lines.append(f"cost: about {tokens / rate / 3600:.1f} h for {model} at the {rate:,.0f} tokens/s measured "
                     f"in run {run}{caveat}")
    return lines


def real_task_lines(sets: list[RetrievalSet], tokens: float) -> list[str]:
    """The real tasks keep their whole corpus whatever the profile: say what that costs, task by task."""
    real = [s for s in sets if not TASKS[s.task].synthetic]
    if not real:
        return []
    words = {s.task: sum(len(t.split()) for t in s.corpus.values()) for s in real}
    share = sum(words.values()) / 0.75 / max(tokens, 1)
    each = "; ".join(f"{s.task} (documents {len(s.corpus):,}, words {words[s.task]:,})" for s in real)
    return [f"real tasks: every query is ranked against the whole corpus, as in LongEmbed (--candidates applies to "
            f"passkey and needle only), so they are encoded whole in any profile: {each}; {share:.0%} of the tokens "
            "above" + (" (long: an hour or more per model on a CPU, in the quick profile too)"
                       if sum(words.values()) / 0.75 > QUICK_REAL_TOKENS else "")]


def measured_rates(out: Path, models: list[str]) -> dict[str, tuple[float, str]]:
    """tokens/s of each model in the newest earlier run that has it."""
    rates: dict[str, tuple[float, str]] = {}
    for path in sorted(out.glob("*/results.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            found = [(name, system.get("tokens_per_second"), system.get("requested"))
                     for name, system in json.loads(path.read_text())["systems"].items()]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # unreadable, or another shape of results.json (one was a traceback before anything ran)
        for name, rate, requested in found:
            for m in models:
                if m not in rates and isinstance(rate, (int, float)) and rate > 0 and m in (name, requested):
                    rates[m] = (rate, path.parent.name)
    return rates


def evaluate(st: Settings, log=print, progress: bool = True) -> tuple[dict, dict[str, Path]]:
    st.validate()
    started = time.perf_counter()
    created = datetime.now(timezone.utc)
    run_name = st.run or f"{created:%Y%m%d-%H%M%S}-{st.profile}"
    folder = Path(st.out) / run_name
    # TREC runs are written as each set is scored: into a hidden folder, moved into place only when the run is done,
    # so a run that fails (or is stopped) does not leave an earlier run of the same name half overwritten
    work = folder.parent / f".{run_name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    try:
        results = _run(st, run_name, created, started, work, log, progress)
        paths = write_outputs(results, work)
    except BaseException:  # failed or stopped (Ctrl-C): nothing of it stays behind, not even hidden
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = folder.parent / f".{run_name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
        log(f"note: replaced the earlier run {run_name!r} in {folder.parent} (a new --run name keeps both)")
    work.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return results, {k: folder / p.name for k, p in paths.items()}


def _run(st: Settings, run_name: str, created: datetime, started: float, work: Path, log, progress: bool) -> dict:
    sets, info = build_sets(st)
    for line in plan_lines(st, sets, info):
        log(line)
    results = {"run": run_name, "created": created.isoformat(timespec="seconds"), "units": "percent",
               "machine": describe(), "load_average_start": load_average(), "settings": _settings_dict(st),
               "data": info, "systems": {}}
    for task in dict.fromkeys(s.task for s in sets):  # beside the runs, so that trec_eval can score them
        part = [s for s in sets if s.task == task]
        write_qrels(work / "runs" / QRELS_FOLDER / f"{task}.qrels",
                    {name: s.qrels[q] for s in part for q, name in _trec_names(s, sets).items()})
    systems: list[tuple[str, Callable[[], Scorer]]] = [
        (m, lambda m=m: DenseScorer(m, dtype=st.dtype)) for m in st.models]
    lexical = _LexicalRuns()  # every model is also scored in hybrid mode: its ranking fused with BM25's
    systems += [(b, lambda b=b: BASELINES[b](st.minilm_chunk) if b == "minilm" else BASELINES[b]())
                for b in st.baselines]
    for label, make in systems:
        log(f"== {label}")
        t0 = time.perf_counter()
        scorer: Scorer = make()
        name = _unique(_safe_name(scorer.name), {*results["systems"], QRELS_FOLDER})
        entry = {"requested": label, "describe": scorer.describe(),
                 "load_seconds": round(time.perf_counter() - t0, 1), "sets": []}
        whole = hybrid = None
        if getattr(scorer, "has_other_vectors", False):  # its dense scores are the best of several vectors
            whole_name = _unique(f"{name}-whole-vector", {*results["systems"], QRELS_FOLDER})
            whole = {"requested": label, "sets": [], "describe": {
                "kind": "longretr, whole vector", "dense": name,
                "scoring": "each document's whole-document vector alone (of its first max_tokens tokens), from the "
                           "same encoding: no lead, span or window vectors"}}
        if label in st.models:
            hybrid_name = _unique(f"{name}+hybrid", {*results["systems"], QRELS_FOLDER})
            hybrid = {"requested": label, "sets": [], "describe": {
                "kind": "hybrid", "dense": name, "lexical": "bm25",
                **{k: DEFAULT_RANKING[k] for k in ("fusion", "weight", "rrf_k")}}}
        for i, s in enumerate(sets):
            scored = scorer.score(s, progress=progress)
            row = _record(work, name, _full_run(scored.scores, s), s, sets,
                          {"seconds": round(scored.seconds, 2), **scored.stats})
            entry["sets"].append(row)
            log(f"   {s.task:<15} {s.split:<10} {row['metric']:<7} {row['value']:5.1f}  "
                f"({len(s.queries)} q, {len(s.corpus)} docs, {scored.seconds:.1f}s)")
            if whole is not None:
                whole["sets"].append(_record(work, whole_name, _full_run(scored.whole_scores, s), s, sets,
                                             {"seconds": row["seconds"]}))
                log(f"   {'':<15} {'':<10} whole   {whole['sets'][-1]['value']:5.1f}")
            if hybrid is not None:
                lex = lexical.run(i, s)
                dense = _full_run(scored.scores if scored.fusion_scores is None else scored.fusion_scores, s)
                dense = break_ties(dense, s.qrels)[0]  # the top TREC_DEPTH, as BM25's
                fused = {q: fuse_ranked(dense[q], lex[q], len(s.corpus)) for q in dense}
                hybrid["sets"].append(_record(work, hybrid_name, fused, s, sets, {"seconds": row["seconds"]}))
                log(f"   {'':<15} {'':<10} hybrid  {hybrid['sets'][-1]['value']:5.1f}")
        scorer.close()
        entry["seconds"] = round(sum(x["seconds"] for x in entry["sets"]), 1)
        tokens = sum(x.get("doc_tokens_total", 0) for x in entry["sets"])
        if tokens:
            entry["doc_tokens_total"] = tokens
            entry["tokens_per_second"] = round(tokens / max(entry["seconds"], 1e-9), 1)
        results["systems"][name] = _finish(entry)
        if whole is not None:
            results["systems"][whole_name] = _finish(whole)
        if hybrid is not None:
            results["systems"][hybrid_name] = _finish(hybrid)
    results["load_average_end"] = load_average()
    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    return results


def _finish(entry: dict) -> dict:
    entry["tied_at_1"] = sum(x["tied_at_1"] for x in entry["sets"])
    entry["scores"], entry["summary"] = summarise(entry["sets"])
    return entry


def _full_run(scores, s: RetrievalSet) -> Run:
    """Every candidate of each query, best first (ties in corpus order until break_ties)."""
    return rank(scores, s.doc_ids, list(s.queries))


def break_ties(run: Run, qrels: Qrels, depth: int | None = TREC_DEPTH) -> tuple[Run, int]:
    """Each query's list, cut to `depth`, with every group of exactly equal scores reordered so that its relevant
    documents come last: ties broken against the system, the cautious reading (LongEmbed, through mteb and
    pytrec_eval, breaks them by document id instead). Also how many queries had a tie at rank 1.

    Every run goes through here before it is scored or written: with best-of-vectors scoring many passkey
    candidates tie exactly (the same lead vector), and corpus order had decided reported cells."""
    out: Run = {}
    tied = 0
    for qid, hits in run.items():
        relevant = {doc for doc, grade in qrels.get(qid, {}).items() if grade > 0}
        ordered = sorted(hits, key=lambda hit: (-hit[1], hit[0] in relevant))  # stable: otherwise as given
        tied += len(ordered) > 1 and ordered[0][1] == ordered[1][1]
        out[qid] = ordered[:depth]
    return out, tied


class _LexicalRuns:
    """BM25's ranking of each set, computed once, for the hybrid rows."""

    def __init__(self) -> None:
        self.scorer: Scorer | None = None
        self.runs: dict[int, Run] = {}

    def run(self, i: int, s: RetrievalSet) -> Run:
        if i not in self.runs:
            self.scorer = self.scorer or BASELINES["bm25"]()
            scores = self.scorer.score(s, progress=False).scores
            self.runs[i] = break_ties(_full_run(scores, s), s.qrels)[0]
        return self.runs[i]


def _record(folder: Path, system: str, run: Run, s: RetrievalSet, sets: list[RetrievalSet], extra: dict) -> dict:
    """Score one system's run on one set (Acc@1 for synthetic tasks, nDCG@10 for real ones), its ties broken
    against the system; write its TREC file."""
    run, tied = break_ties(run, s.qrels)
    synthetic = TASKS[s.task].synthetic
    value = 100 * (acc_at_1(run, s.qrels) if synthetic else ndcg_at_k(run, s.qrels, 10))
    names = _trec_names(s, sets)
    write_trec(folder / "runs" / system / f"{s.task}.trec", {names[q]: hits for q, hits in run.items()}, system,
               append=s is not _first(sets, s.task))
    return {"task": s.task, "split": s.split, "context_length": s.context_length,
            "metric": "acc@1" if synthetic else "ndcg@10", "value": round(value, 2), "queries": len(s.queries),
            "documents": len(s.corpus), "tied_at_1": tied, **extra}


def _trec_names(s: RetrievalSet, sets: list[RetrievalSet]) -> dict[str, str]:
    """Each query's name in the TREC files: one file holds every length of a task, so where the data repeats qids
    across lengths, a set's qids are written <qid>@<length> (in the runs and the qrels alike)."""
    others = {q for o in sets if o.task == s.task and o is not s for q in o.queries}
    repeated = not others.isdisjoint(s.queries)
    return {q: f"{q}@{s.context_length}" if repeated else q for q in s.queries}


def _first(sets: list[RetrievalSet], task: str) -> RetrievalSet:
    return next(s for s in sets if s.task == task)


def _safe_name(name: str) -> str:
    """A system's name is its TREC folder (runs/<name>/): a config named "../../x" wrote outside the run folder,
    and "org/model" nested one level deeper."""
    return re.sub(r"[^\w.+-]", "_", name).lstrip(".") or "_"


def _unique(name: str, taken: Collection[str]) -> str:
    base, n = name, 2
    while name in taken:
        name = f"{base}-{n}"
        n += 1
    return name


def _settings_dict(st: Settings) -> dict:
    d = asdict(st)
    d["lengths"] = list(st.lengths)
    return d


def summarise(rows: list[dict]) -> tuple[dict, dict]:
    """Per-task scores (synthetic: by length) and the Table-2 columns: ≤4k / >4k means, real tasks, averages."""
    scores: dict = {}
    for r in rows:
        if r["context_length"] is not None:
            scores.setdefault(r["task"], {})[str(r["context_length"])] = r["value"]
        else:
            scores[r["task"]] = r["value"]
    summary: dict = {}
    for task in ("passkey", "needle"):
        by_len = scores.get(task, {})
        summary[f"{task}_le4k"] = mean([v for x, v in by_len.items() if int(x) <= 4096])
        summary[f"{task}_gt4k"] = mean([v for x, v in by_len.items() if int(x) > 4096])
        summary[f"{task}_all"] = mean(list(by_len.values()))
    for task in ("narrativeqa", "qmsum", "summ_screen_fd", "2wikimqa"):
        summary[task] = scores.get(task)
    cols = [summary[k] for k in ("passkey_le4k", "passkey_gt4k", "needle_le4k", "needle_gt4k",
                                 "narrativeqa", "qmsum", "summ_screen_fd", "2wikimqa")]
    summary["avg"] = mean(cols) if all(c is not None for c in cols) else None
    synth = cols[:4]
    summary["synthetic_avg"] = mean(synth) if all(c is not None for c in synth) else None
    six = [summary["passkey_all"], summary["needle_all"], *cols[4:]]
    summary["longembed_avg"] = mean(six) if all(c is not None for c in six) else None
    return scores, {k: (round(v, 2) if v is not None else None) for k, v in summary.items()}
