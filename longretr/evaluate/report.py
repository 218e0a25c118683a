"""Outputs of a run: results.json, table.md (shaped like DiffEmbed's Table 2), acc_vs_length.png, TREC run files
(runs/<system>/<task>.trec) and their qrels (runs/qrels/<task>.qrels)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .metrics import Run

COLUMNS = ("Pk≤4k", "Pk>4k", "Nd≤4k", "Nd>4k", "NQA", "QMS", "SFD", "WQA")
SUMMARY_KEYS = ("passkey_le4k", "passkey_gt4k", "needle_le4k", "needle_gt4k",
                "narrativeqa", "qmsum", "summ_screen_fd", "2wikimqa")

# Quoted, not measured: Table 2 of Zhang et al. 2025, "Diffusion vs. Autoregressive Language Models: A Text
# Embedding Perspective" (arXiv 2505.15045v1): LongEmbed, models trained on E5 data; N = training samples.
# Columns as COLUMNS, then the paper's Avg (the mean of the eight cells, except where noted).
PAPER_SOURCE = ("Zhang et al. 2025, Diffusion vs. Autoregressive Language Models: A Text Embedding Perspective, "
                "arXiv 2505.15045v1, Table 2")
PAPER_ROWS: tuple[tuple[str, str, tuple[float, ...], float], ...] = (
    ("E5-Mistral", "2M", (95.6, 30.0, 68.8, 14.0, 44.6, 43.6, 96.8, 82.0), 59.4),
    ("Llama3", "16k", (54.0, 3.3, 51.2, 4.0, 31.9, 30.8, 67.6, 47.3), 32.3),
    ("Llama3 + LLM2Vec", "16k", (59.6, 4.0, 59.2, 6.7, 36.5, 34.4, 84.5, 51.1), 42.0),
    ("Mistral", "16k", (87.6, 22.0, 72.4, 20.0, 35.0, 36.8, 85.4, 62.9), 52.8),
    ("Mistral + LLM2Vec", "16k", (98.8, 30.0, 69.2, 21.3, 39.5, 40.0, 91.6, 78.0), 58.6),
    ("Qwen2.5", "16k", (86.8, 24.6, 68.0, 19.3, 31.7, 35.6, 88.0, 68.3), 52.8),
    ("Qwen2.5 + LLM2Vec", "16k", (94.0, 28.7, 72.4, 20.0, 36.5, 37.3, 90.5, 68.1), 55.9),
    ("DiffEmbed (Dream 7B)", "16k", (100.0, 29.3, 86.8, 20.0, 42.1, 43.8, 98.0, 77.2), 62.2),
)


def fmt(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def table_markdown(results: dict) -> str:
    """Our measured rows, then the paper's quoted rows, in the column order of DiffEmbed's Table 2."""
    s = results["settings"]
    head = ["System", "Kind", *COLUMNS, "Avg", "Synth. avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, system in results["systems"].items():
        summary = system["summary"]
        cells = [fmt(summary.get(k)) for k in SUMMARY_KEYS]
        lines.append(f"| **{name}** (measured) | {system['describe']['kind']} | " + " | ".join(cells)
                     + f" | {fmt(summary.get('avg'))} | {fmt(summary.get('synthetic_avg'))} |")
    for name, n, cells, avg in PAPER_ROWS:
        synth = sum(cells[:4]) / 4
        lines.append(f"| {name} (*quoted, not measured*; N={n}) | paper | " + " | ".join(fmt(c) for c in cells)
                     + f" | {fmt(avg)} | {fmt(synth)}† |")
    le4k = [x for x in s["lengths"] if x <= 4096]
    gt4k = [x for x in s["lengths"] if x > 4096]
    notes = [
        "",
        f"Measured: {results['created']} on {results['machine']['summary']}; profile `{s['profile']}`; "
        f"wall time {results['wall_seconds'] / 60:.1f} min; load average (1/5/15 min) "
        f"{_load(results.get('load_average_start'))} at the start, {_load(results.get('load_average_end'))} at the "
        f"end (other processes on the machine slow a run down); data: {results['data']['source']}.",
        f"Synthetic columns are Acc@1 (%) averaged over the context lengths run: ≤4k = {le4k or 'none'}, "
        f">4k = {gt4k or 'none'}; {_pool(results)} Real-task columns are nDCG@10 (%)"
        + ("; — = not run (the real tasks need `--data`; a >4k column, a length above 4096)." if any(
            system["summary"].get(k) is None for system in results["systems"].values() for k in SUMMARY_KEYS) else "."),
        *_real_as_run(results),
        "Avg = mean of the eight columns (only when all eight were run); Synth. avg = mean of the four synthetic "
        "columns.",
        *_ties(results),
        f"Quoted rows: {PAPER_SOURCE}; 7B models trained on E5 data, evaluated on the published LongEmbed "
        "(100 candidates per length, lengths 256-32768). They are not comparable cell for cell with a run on "
        "regenerated data or fewer candidates. † computed here from the quoted cells. The paper prints "
        "Llama3's Avg as 32.3; the mean of its printed cells is 36.3.",
    ]
    return "\n".join(lines + notes) + "\n"


def _load(values: list[float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values) if values else "unknown"


def _pool(results: dict) -> str:
    # From the sets as run, not from --candidates: a published copy may hold fewer candidates than asked for (the
    # table said "8 candidates, chance 12.5%" over the 3-candidate fixture, where chance is 33.3%)
    synth = [x for x in results["data"]["sets"] if x.get("context_length") is not None]
    if not synth:
        return ""
    docs, queries, chance = ([x[k] for x in synth] for k in ("documents", "queries", "chance"))
    return (f"{_span(docs, str)} candidate documents and {_span(queries, str)} queries per length "
            f"(LongEmbed: 100 and 50; chance Acc@1 here {_span(chance, lambda v: f'{v:.3g}')}%).")


def _real_as_run(results: dict) -> list[str]:
    """Each real task run on fewer candidates or queries than the data has, as run (its nDCG@10 is over those)."""
    cut = [x for x in results["data"]["sets"] if x.get("context_length") is None and "documents_in_data" in x
           and (x["documents"], x["queries"]) != (x["documents_in_data"], x["queries_in_data"])]
    if not cut:
        return []
    column = {t: c for t, c in zip(SUMMARY_KEYS[4:], COLUMNS[4:])}
    each = "; ".join(f"{column.get(x['task'], x['task'])} {x['documents']:,} of {x['documents_in_data']:,} "
                     f"candidates and {x['queries']:,} of {x['queries_in_data']:,} queries" for x in cut)
    return [f"Real tasks run on fewer than the published data holds: {each}."]


def _ties(results: dict) -> list[str]:
    tied = {name: system.get("tied_at_1", 0) for name, system in results["systems"].items()}
    if not any(tied.values()):
        return ["Ties are broken against the system (relevant documents last among equal scores); no query had a "
                "tie at rank 1."]
    return ["Ties are broken against the system (relevant documents last among equal scores). Queries whose rank 1 "
            "was a tie (`tied_at_1` in results.json): " + ", ".join(f"{n} {t}" for n, t in tied.items() if t) + "."]


def _span(values: list, show) -> str:
    low, high = min(values), max(values)
    return show(low) if low == high else f"{show(low)}-{show(high)}"


def pool_of(results: dict, task: str) -> str:
    """Candidates and queries per length of one synthetic task, from the sets as run (the plot's panel titles)."""
    sets = [x for x in results["data"]["sets"] if x["task"] == task]
    return (f"{_span([x['documents'] for x in sets], str)} candidates, "
            f"{_span([x['queries'] for x in sets], str)} queries per length")


def chance_by_length(results: dict, task: str) -> dict[int, float]:
    """Acc@1 (%) of a random ranking per context length of one synthetic task, as plotted and stated in the table."""
    return {x["context_length"]: x["chance"] for x in results["data"]["sets"]
            if x["task"] == task and x.get("context_length") is not None}


def per_length_markdown(results: dict) -> str:
    lengths = results["settings"]["lengths"]
    lines = []
    for task in ("passkey", "needle"):
        rows = [(n, sys["scores"].get(task)) for n, sys in results["systems"].items() if sys["scores"].get(task)]
        if not rows:
            continue
        lines += [f"\n{task} Acc@1 (%) by context length:\n", "| System | " + " | ".join(map(str, lengths)) + " |",
                  "|" + "---|" * (len(lengths) + 1)]
        lines += [f"| {n} | " + " | ".join(fmt(v.get(str(x))) for x in lengths) + " |" for n, v in rows]
    return "\n".join(lines) + ("\n" if lines else "")


MARKERS = "os^Dv<>p"
DASHES = ["-", "--", "-.", ":"]


def plot(results: dict, path: Path) -> bool:
    """Acc@1 against context length, one line per system, one panel per synthetic task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in ("passkey", "needle") if any(s["scores"].get(t) for s in results["systems"].values())]
    if not tasks:
        return False
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for i, (name, system) in enumerate(results["systems"].items()):
            values = system["scores"].get(task) or {}
            xs = sorted(int(x) for x in values)
            if xs:  # systems level at 100 (the hybrid rows, BM25) share one line: marker, dash and size tell them apart
                ax.plot(xs, [values[str(x)] for x in xs], marker=MARKERS[i % len(MARKERS)],
                        ls=DASHES[i % len(DASHES)], markersize=max(3.0, 10 - 1.5 * (i % 5)), label=name)
        chance = chance_by_length(results, task)
        if len(set(chance.values())) == 1:
            ax.axhline(next(iter(chance.values())), color="grey", ls="--", lw=1, label="chance")
        elif chance:  # sets of different sizes: chance differs by length
            ax.plot(sorted(chance), [chance[x] for x in sorted(chance)], color="grey", ls="--", lw=1, label="chance")
        ax.set_xscale("log", base=2)
        xs = results["settings"]["lengths"]
        ax.set_xticks(xs, [f"{x // 1024}k" if x >= 1024 else str(x) for x in xs])
        ax.set_ylim(-3, 103)
        ax.set_xlabel("context length (tokens, LongEmbed's word cap x 1/0.75)")
        ax.set_ylabel("Acc@1 (%)")
        ax.set_title(f"{task} ({results['data']['source_short']}; {pool_of(results, task)})", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(f"longretr eval, profile {results['settings']['profile']} - {results['machine']['summary']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_trec(path: Path, run: Run, tag: str, append: bool = False) -> None:
    """Each query's list in its order (ties already broken) with a score column that trec_eval sorts back into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{qid} Q0 {doc} {rank} {score} {tag}\n" for qid, hits in run.items()
             for rank, (doc, score) in enumerate(zip((d for d, _ in hits), trec_scores([x for _, x in hits])), 1)]
    with path.open("a" if append else "w") as f:
        f.writelines(lines)


def trec_scores(scores: list[float]) -> list[str]:
    """One query's scores as written, strictly decreasing: each rounded to 6 places, and lowered to 1e-6 below the
    line before where it would not be below it. trec_eval re-sorts a run by score (ties by docno, descending), and
    equal scores, or scores equal after rounding, would be ranked by it, not as results.json scored them."""
    out: list[str] = []
    previous: int | None = None
    for score in scores:
        micro = round(score * 1_000_000)  # in millionths: exact steps of 1e-6, no drift
        if previous is not None and micro >= previous:
            micro = previous - 1
        out.append(f"{micro / 1_000_000:.6f}")
        previous = micro
    return out


def write_qrels(path: Path, qrels: dict[str, dict[str, int]]) -> None:
    """The judgments in trec_eval's format (qid 0 docid relevance), under the same qids as the run files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{qid} 0 {doc} {grade}\n" for qid, judged in qrels.items()
                            for doc, grade in judged.items()))


def write_outputs(results: dict, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "results.json", "table": folder / "table.md", "plot": folder / "acc_vs_length.png"}
    paths["json"].write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    paths["table"].write_text(table_markdown(results) + per_length_markdown(results))
    if not plot(results, paths["plot"]):
        del paths["plot"]
    return paths
