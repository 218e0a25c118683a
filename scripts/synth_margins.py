"""Why a model wins or loses a passkey/needle cell: its score split into signal and document bias.

In a synthetic set every candidate is the same filler with one needle in it, so document vectors are
nearly equal and a ranking turns on small differences. For the score matrix S (queries x candidates):

    signal    how much a query prefers its own document over the average candidate
              (mean of S[q, relevant] - mean_d S[q, d])
    bias      how much every query prefers a candidate, whatever it asks (mean_q S[q, d] minus the
              mean of S); "spread" is its max - min over candidates. A spread above the signal lets
              one candidate win queries that are not its own (a hub)
    hub share the share of queries whose top-1 is the most-chosen candidate
    alone     Acc@1 with each candidate reduced to its needle sentence: matching without the filler

Scores use the whole documents' vectors only (a config's lead vectors are left out), so the default is given as
`gemma3-270m-diffembed-cpu2`, the same model without them:

    .venv/bin/python scripts/synth_margins.py --model gemma3-270m-diffembed-cpu2 --model gemma3-270m-diffembed-cpu \
        --lengths 256,512 --out results/synth-margins.json

Uses the quick profile's regenerated sets (`longretr eval`'s cache), so the cells match its runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from longretr.embedder import Embedder  # noqa: E402
from longretr.evaluate.data import RetrievalSet, load_task, parse_lengths, read_jsonl  # noqa: E402
from longretr.evaluate.runner import PROFILES  # noqa: E402
from longretr.evaluate.synth import PASSKEY_NEEDLE, synthetic_sets  # noqa: E402
from longretr.machine import describe  # noqa: E402


def needle_text(task: str, meta: dict) -> str:
    return meta["fact"] if task == "needle" else PASSKEY_NEEDLE.format(name=meta["name"], key=meta["key"])


def margins(emb: Embedder, task: str, s: RetrievalSet, meta: dict[str, dict]) -> dict:
    qids = list(s.queries)
    docs = s.doc_ids
    rel = np.array([docs.index(next(iter(s.qrels[q]))) for q in qids])
    Q = emb.encode_queries([s.queries[q] for q in qids])
    S = Q @ emb.encode_documents([s.corpus[d] for d in docs], progress=False).vectors.T
    A = Q @ emb.encode_documents([needle_text(task, meta[d]) for d in docs], progress=False).vectors.T
    rows = np.arange(len(qids))
    bias = S.mean(0) - S.mean()
    top = S.argmax(1)
    return {
        "acc1": float((top == rel).mean()),
        "alone_acc1": float((A.argmax(1) == rel).mean()),
        "signal": float((S[rows, rel] - S.mean(1)).mean()),
        "bias_spread": float(bias.max() - bias.min()),
        "hub_share": Counter(top.tolist()).most_common(1)[0][1] / len(qids),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--lengths", default="256,512,1024")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    lengths = parse_lengths(args.lengths)
    quick = PROFILES["quick"]
    # Same arguments as `longretr eval` (both tasks): the cached sets, so the cells are its cells.
    root = synthetic_sets(["passkey", "needle"], quick["lengths"], quick["candidates"], quick["queries"], seed=0)
    results = {"machine": describe(), "data": str(root), "models": {}}
    for model in args.model:
        emb = Embedder(model)
        for task in ("passkey", "needle"):
            meta = {m["doc_id"]: m for m in read_jsonl(root / task / "meta.jsonl", ("doc_id",))}
            for s in load_task(root, task, lengths):
                r = margins(emb, task, s, meta)
                results["models"].setdefault(model, {}).setdefault(task, {})[s.context_length] = r
                print(f"{model:28s} {task:8s} {s.context_length:>6} acc@1 {r['acc1']:.3f}  alone {r['alone_acc1']:.3f}"
                      f"  signal {r['signal']:.4f}  bias spread {r['bias_spread']:.4f}  hub {r['hub_share']:.2f}",
                      flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}; machine: {results['machine']['summary']}")


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
