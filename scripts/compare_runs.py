"""Compare a candidate model with a baseline over several known-item query sets, from compare_modes.py's JSON.

Each --pair is BASE CANDIDATE, two compare_modes.json files for the same queries (same query ids). Printed per set
and mode: both MRR@10 and how many queries ranked their document higher / lower under the candidate; then each
mode's query-weighted mean over all the sets (the figure a decision rule over several sets reads), and the same mean
for every other run that every file scored: the baselines (BM25's lexical mode, chunked MiniLM) and the hybrid fusion
variants (`hybrid-convex-w0.4`, ...); and on how many sets each model's dense and hybrid modes scored above both
baselines of its own run (the issue's bar for the default). Pairing a file with itself gives one model's figures.

    .venv/bin/python scripts/compare_runs.py \\
        --pair runs/pgdocs/compare_modes.json runs/pgdocs-soup/compare_modes.json \\
        --pair runs/fresh/compare_modes.json runs/fresh-soup/compare_modes.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODES = ("dense", "hybrid")
BASELINES = ("lexical", "minilm-chunked")


def reciprocal(rank: int | None) -> float:
    return 1.0 / rank if rank else 0.0


def compare(base: dict, cand: dict) -> dict:
    """Per mode: MRR@10 of each, queries up / down, and the query count."""
    if base["query_ids"] != cand["query_ids"]:
        raise SystemExit("the two runs scored different queries")
    out = {}
    for mode in MODES + tuple(m for m in base["runs"] if m not in MODES and m in cand["runs"]):
        b, c = base["runs"][mode]["ranks"], cand["runs"][mode]["ranks"]
        up = sum(reciprocal(y) > reciprocal(x) for x, y in zip(b, c))
        down = sum(reciprocal(y) < reciprocal(x) for x, y in zip(b, c))
        out[mode] = {"base": base["runs"][mode]["mrr@10"], "candidate": cand["runs"][mode]["mrr@10"],
                     "up": up, "down": down, "queries": len(b)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs=2, type=Path, action="append", required=True, metavar=("BASE", "CANDIDATE"))
    args = ap.parse_args(argv)
    missing = [str(p) for pair in args.pair for p in pair if not p.is_file()]
    if missing:
        ap.error(f"--pair: no such file: {', '.join(missing)}")
    runs = [(json.loads(base.read_text()), json.loads(cand.read_text())) for base, cand in args.pair]
    rows = [(cand.parent.name, compare(*pair)) for (_, cand), pair in zip(args.pair, runs)]
    print("| set | mode | queries | base MRR@10 | candidate MRR@10 | up / down |")
    print("|---|---|---|---|---|---|")
    for name, r in rows:
        for mode in MODES:
            m = r[mode]
            print(f"| {name} | {mode} | {m['queries']} | {m['base']:.3f} | {m['candidate']:.3f} | "
                  f"{m['up']} / {m['down']} |")
    for mode in (m for m in rows[0][1] if all(m in r for _, r in rows)):
        n = sum(r[mode]["queries"] for _, r in rows)
        base = sum(r[mode]["base"] * r[mode]["queries"] for _, r in rows) / n
        cand = sum(r[mode]["candidate"] * r[mode]["queries"] for _, r in rows) / n
        print(f"{mode}, all {n} queries (query-weighted): base {base:.4f}, candidate {cand:.4f}")
    if all(b in run["runs"] for pair in runs for run in pair for b in BASELINES):
        names = [name for name, _ in rows]
        for mode in MODES:
            counts = []
            for i, who in enumerate(("base", "candidate")):
                missed = [name for name, pair in zip(names, runs) if not above_baselines(pair[i], mode)]
                counts.append(f"{who} {len(runs) - len(missed)} of {len(runs)} (not: {', '.join(missed) or 'none'})")
            print(f"{mode} above BM25 and chunked MiniLM (each run's own), sets: " + ", ".join(counts))


def above_baselines(run: dict, mode: str) -> bool:
    """Whether one compare_modes.json run's mode scored a higher MRR@10 than each of its baselines."""
    return all(run["runs"][mode]["mrr@10"] > run["runs"][b]["mrr@10"] for b in BASELINES)


if __name__ == "__main__":
    main()
