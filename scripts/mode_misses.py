"""Count, per query set and search mode, the known-item queries ranking their page below a cut-off.

Reads compare_modes.json files.

A miss is a rank above --rank (default 3) or no rank (not in the top 10). Printed per set: each mode's miss count,
then the dense misses with their relevant page. With --misses (a JSON whose rows carry `relevant` and `dense_top3`,
as training/soup/compare-all/dense-misses-pgdocs.json) and --index, it also prints the median token count of the
missed pages and of the pages dense mode ranks first for them, read from the index's docs table.

    .venv/bin/python scripts/mode_misses.py \\
        longretr/weights/gemma3-270m-diffembed-cpu2/training/soup/compare-all/pgdocs_queries*/compare_modes.json \\
        --misses longretr/weights/gemma3-270m-diffembed-cpu2/training/soup/compare-all/dense-misses-pgdocs.json \\
        --index indexes/pgdocs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_modes import read_known_items  # noqa: E402

from longretr.store import read_manifest  # noqa: E402

MODES = ("dense", "lexical", "minilm-chunked")


def misses(run: dict, mode: str, cutoff: int) -> list[str]:
    """Query ids whose relevant page ranks below `cutoff` (or outside the top 10) under `mode`."""
    ranks = run["runs"][mode]["ranks"]
    return [qid for qid, r in zip(run["query_ids"], ranks) if r is None or r > cutoff]


def token_counts(index: Path) -> dict[str, int]:
    """Document id -> tokens encoded, from the docs table of the index's current version."""
    docs = pq.read_table(index / read_manifest(index)["files"]["docs"], columns=["id", "n_tokens"])
    return dict(zip(docs["id"].to_pylist(), docs["n_tokens"].to_pylist()))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="compare_modes.json files")
    ap.add_argument("--rank", type=int, default=3, help="a rank above this counts as a miss")
    ap.add_argument("--misses", type=Path, help="JSON with rows of relevant and dense_top3")
    ap.add_argument("--index", type=Path, help="index folder for page token counts (with --misses)")
    args = ap.parse_args(argv)
    missing = [str(p) for p in [*args.runs, args.misses] if p is not None and not p.is_file()]
    if missing:
        ap.error(f"no such file: {', '.join(missing)}")
    if args.index is not None and not (args.index / "manifest.json").is_file():
        ap.error(f"--index {args.index}: no index here (manifest.json missing)")

    print(f"| set | queries | {' | '.join(f'{m} misses' for m in MODES)} |")
    print(f"|---|---|{'---|' * len(MODES)}")
    dense_missed = []
    for path in args.runs:
        run = json.loads(path.read_text())
        counts = [str(len(misses(run, m, args.rank))) if m in run["runs"] else "-" for m in MODES]
        print(f"| {path.parent.name} | {len(run['query_ids'])} | {' | '.join(counts)} |")
        relevant = {q["id"]: q["relevant"] for q in read_known_items(Path(run["query_file"]))}
        dense_missed += [(qid, relevant[qid]) for qid in misses(run, "dense", args.rank)]
    print(f"\ndense misses (rank > {args.rank} or none), {len(dense_missed)}:")
    for qid, page in dense_missed:
        print(f"  {qid}  {page}")

    if args.misses and args.index:
        tokens = token_counts(args.index)
        rows = json.loads(args.misses.read_text())["rows"]
        missed = [tokens[r["relevant"]] for r in rows]
        first = [tokens[r["dense_top3"][0]] for r in rows]
        print(f"\n{len(rows)} rows of {args.misses.name}: "
              f"median tokens of the missed pages {statistics.median(missed):,.0f}, "
              f"of dense's first pages {statistics.median(first):,.0f}, "
              f"of the whole index {statistics.median(tokens.values()):,.0f}")


if __name__ == "__main__":
    main()
