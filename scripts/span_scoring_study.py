"""Other ways to score a document from its span vectors, on scripts/span_study.py's cached vectors.

"default" below scores a document the best cosine of its whole vector, its 256-token lead and its 256-token spans
(the default when span vectors came, 2026-12-02). This scores the alternatives on the same sets, without encoding
any document again:

    whole+b    best + b * cosine of the whole document's vector
    lead+b     best + b * the higher of the whole vector's and the lead's cosines (lead+0.5 is the default's
               ranking since 2026-12-02: fusion.fusion_scores)
    spans128   128-token spans instead of 256
    overlap    256-token spans every 128 tokens (each overlapping the next by half)
    prf m,a    the query moved towards the mean of its top m vectors (weight a), then scored as the default

Dense MRR@10 for each, and hybrid MRR@10 (BM25 fused as fusion.fuse does) for the default, for the lead alone
(no spans) and for lead+0.5, under convex and rrf fusion at several dense weights.

    .venv/bin/python scripts/span_scoring_study.py --cache /tmp/spans --out results/span-scoring.json

--cache is span_study.py's (it encodes what is missing there: about 2 h for the three sets on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from doc_vector_study import unit  # noqa: E402
from span_study import LEAD, UNIT, encode, span_vectors  # noqa: E402
from train_card import lexical_lists, metrics, query_sets, ranked_lists  # noqa: E402

from longretr.config import load_config  # noqa: E402
from longretr.embedder import Embedder, best_scores  # noqa: E402
from longretr.fusion import fuse  # noqa: E402
from longretr.machine import describe  # noqa: E402

FUSIONS = [("convex", w) for w in (0.3, 0.4, 0.5, 0.6, 0.7)] + [("rrf", w) for w in (0.4, 0.5, 0.6)]


def overlapping(cfg, enc: dict, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(owners, unit vectors) of windows of `width` consecutive 128-token spans, one starting at every span."""
    unit_cfg = replace(cfg, span_tokens=UNIT, max_tokens=32768)
    owners, vectors = [], []
    for row, n in enumerate(enc["n_tokens"].tolist()):
        units = unit_cfg.spans_for(n)
        means = enc["spans"][enc["owners"] == row]
        sizes = np.array([b - a for a, b in units], dtype="float32")
        for i in range(max(0, len(units) - width + 1)):
            owners.append(row)
            vectors.append(sizes[i:i + width] @ means[i:i + width] / sizes[i:i + width].sum())
    return np.array(owners, dtype="int64"), unit(np.array(vectors))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m-diffembed-cpu2")
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sets", default="demo,longdoc,manpage")
    args = ap.parse_args()
    cfg = load_config(args.model)
    sets = query_sets(Path("data/train"), args.corpus, 150, args.sets)  # before the model loads
    emb = Embedder(cfg)
    results = {"model": cfg.name, "machine": describe(), "sets": {}}
    for name, (instruction, queries, docs, relevant) in sets.items():
        enc = encode(emb, cfg, docs, args.cache / f"{cfg.name}-{name}.npz")
        emb.config = replace(cfg, query_instruction=instruction or cfg.query_instruction)
        Q = emb.encode_queries(queries)
        longer = np.flatnonzero(enc["n_tokens"] > LEAD)
        owners, spans = span_vectors(cfg, enc, 256)
        # every vector of the default, and whose it is
        all_owners = np.concatenate([np.arange(len(docs)), longer, owners])
        all_vectors = np.concatenate([unit(enc["whole"]), unit(enc["leads"][longer]), spans])
        floor = np.full((len(Q), len(docs)), -np.inf, dtype="float32")
        whole = Q @ unit(enc["whole"]).T
        lead = best_scores(whole, Q, longer, unit(enc["leads"][longer]))  # the higher of whole and lead
        default = best_scores(floor, Q, all_owners, all_vectors)
        dense = {"default": default, "lead only": lead}
        for b in (0.1, 0.25, 0.5, 1.0):
            dense[f"whole+{b}"] = default + b * whole
            dense[f"lead+{b}"] = default + b * lead
        short_owners, short = enc["owners"], unit(enc["spans"])
        dense["spans128"] = best_scores(lead, Q, short_owners, short)
        dense["overlap"] = best_scores(lead, Q, *overlapping(cfg, enc, 2))
        raw = Q @ all_vectors.T
        for m in (1, 3, 5):
            top = np.argsort(-raw, axis=1)[:, :m]
            for a in (0.3, 0.6, 1.0):
                moved = unit(Q + a * all_vectors[top].mean(1))
                dense[f"prf {m},{a}"] = best_scores(floor, moved, all_owners, all_vectors)
        row = {"dense": {k: round(metrics(ranked_lists(v), relevant)["mrr@10"], 3) for k, v in dense.items()},
               "hybrid": {}}
        lexical = lexical_lists(queries, docs)
        for variant in ("default", "lead only", "lead+0.5"):
            ranked = ranked_lists(dense[variant])
            row["hybrid"][variant] = {
                f"{method} {w}": round(metrics([fuse(d, lx, 100, method, w) for d, lx in zip(ranked, lexical)],
                                               relevant)["mrr@10"], 3)
                for method, w in FUSIONS}
        print(name, json.dumps(row), flush=True)
        results["sets"][name] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}; machine: {results['machine']['summary']}")


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
