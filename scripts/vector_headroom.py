"""How much could a linear map on the vectors of a built index buy? A headroom check, not a method.

Dense mode's misses on the PostgreSQL pages could come from query vectors pointing the wrong way (fixable on the
query side alone, with no re-indexing) or from what the document vectors hold. This fits a map on the query vectors,
q -> normalise(q + qW), and one on both sides (documents' vectors through their own map), with InfoNCE over all the
index's documents (a document scores the best cosine of its vectors, as dense search does), on half of the
known-item queries, and scores the other half; then the halves swap. The queries are evaluation queries, so
nothing fitted here may ship: a map that gains little even in-domain will gain less trained on other data.
It also counts the distinct documents that dense mode wrongly ranks first (few distinct ones would mean hub
documents, which a per-document penalty could fix), and which of a document's vectors (whole, lead, or a span) gave
each first-placed document its score, for all queries and for the wrong first places.

    .venv/bin/python scripts/vector_headroom.py --index indexes/pgdocs \\
        --queries tests/data/pgdocs_queries.jsonl tests/data/pgdocs_queries_fresh.jsonl \\
        tests/data/pgdocs_queries_fresh2.jsonl --out results/vector-headroom.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import faiss
import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from compare_modes import read_known_items  # noqa: E402

from longretr.embedder import Embedder  # noqa: E402
from longretr.evaluate.metrics import known_item  # noqa: E402
from longretr.machine import describe  # noqa: E402
from longretr.search import manifest_model  # noqa: E402
from longretr.store import EXTRA_ID, EXTRA_STEP, VID_MASK, load  # noqa: E402

SCALE = 50.0  # the training recipe's (temperature 0.02)


def index_vectors(folder: str) -> tuple[list[str], torch.Tensor, torch.Tensor, list[str]]:
    """Document ids, every vector in the index, the column (document) that owns each vector, and each vector's kind:
    whole, lead or span (store.EXTRA_ID: a document's other vectors are its lead, where it has one, then its spans,
    then past max_tokens its windows', counted as spans here)."""
    snap = load(folder, lexical=False, ann=False)
    ids = faiss.vector_to_array(snap.index.id_map)
    vecs = snap.index.index.reconstruct_n(0, snap.index.ntotal)
    vid2doc = dict(zip(snap.docs.column("vid").to_pylist(), snap.docs.column("id").to_pylist()))
    docs = sorted(set(vid2doc.values()))
    col = {d: i for i, d in enumerate(docs)}
    owner = [col[vid2doc[int(v)]] for v in ids & VID_MASK]
    config = manifest_model(folder, snap.manifest)
    has_lead = {v for v, n in zip(snap.docs.column("vid").to_pylist(), snap.docs.column("n_tokens").to_pylist())
                if config.lead_for(n)}  # as search does: where a document has a lead, its first other vector is it
    kinds = ["whole" if i < EXTRA_ID else "lead" if i < EXTRA_ID + EXTRA_STEP and i & VID_MASK in has_lead else "span"
             for i in ids.tolist()]
    return docs, torch.tensor(vecs), torch.tensor(owner), kinds


def winning_kinds(q: torch.Tensor, vecs: torch.Tensor, owner: torch.Tensor, kinds: list[str], top: torch.Tensor
                  ) -> list[str]:
    """Per query, the kind of the vector that gave its first-placed document (top) that document's score."""
    sims = (q @ vecs.T).masked_fill(owner[None] != top[:, None], -2.0)
    return [kinds[i] for i in sims.argmax(1).tolist()]


def doc_scores(q: torch.Tensor, vecs: torch.Tensor, owner: torch.Tensor, n_docs: int) -> torch.Tensor:
    """[Q, N] each document's best cosine over its vectors (dense mode's score)."""
    out = torch.full((len(q), n_docs), -1e9)
    return out.scatter_reduce(1, owner.expand(len(q), -1), q @ vecs.T, "amax")


def mrr10(scores: torch.Tensor, gold: torch.Tensor) -> float:
    """MRR@10 by the project's known-item metric (documents as column numbers)."""
    return known_item(scores.topk(10, dim=1).indices.tolist(), gold.tolist(), 10)["mrr@10"]


def fit_and_score(q: torch.Tensor, gold: torch.Tensor, vecs: torch.Tensor, owner: torch.Tensor, n_docs: int,
                  train: torch.Tensor, test: torch.Tensor, both: bool, l2: float, steps: int) -> float:
    dim = q.shape[1]
    wq = torch.zeros(dim, dim, requires_grad=True)
    wd = torch.zeros(dim, dim, requires_grad=both)
    opt = torch.optim.Adam([wq, wd] if both else [wq], lr=1e-3)

    def mapped(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x + x @ w, dim=-1)

    for _ in range(steps):
        s = doc_scores(mapped(q[train], wq), mapped(vecs, wd), owner, n_docs)
        loss = torch.nn.functional.cross_entropy(s * SCALE, gold[train]) + l2 * ((wq**2).sum() + (wd**2).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return mrr10(doc_scores(mapped(q[test], wq), mapped(vecs, wd), owner, n_docs), gold[test])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", nargs="+", type=Path, required=True)
    ap.add_argument("--model", default="default", help="the model the index was built with")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    docs, vecs, owner, kinds = index_vectors(args.index)
    col = {d: i for i, d in enumerate(docs)}
    queries = [q for path in args.queries for q in read_known_items(path)]
    q = torch.tensor(Embedder(args.model).encode_queries([x["text"] for x in queries]))
    gold = torch.tensor([col[x["relevant"]] for x in queries])

    base = doc_scores(q, vecs, owner, len(docs))
    top = base.argmax(1)
    wrong = top != gold
    won_by = winning_kinds(q, vecs, owner, kinds, top)
    result = {"index": args.index, "model": args.model, "queries": len(queries),
              "query_files": [str(p) for p in args.queries], "dense_mrr@10": mrr10(base, gold),
              "wrong_top1": int(wrong.sum()), "distinct_wrong_top1_documents": len(set(top[wrong].tolist())),
              "top1_won_by": dict(Counter(won_by)),
              "wrong_top1_won_by": dict(Counter(k for k, w in zip(won_by, wrong.tolist()) if w)),
              "folds": [], "machine": describe()}
    perm = torch.tensor(np.random.default_rng(0).permutation(len(queries)))
    halves = [perm[::2], perm[1::2]]
    print(f"dense MRR@10 {result['dense_mrr@10']:.4f} over {len(queries)} queries; {result['wrong_top1']} wrong "
          f"first places, {result['distinct_wrong_top1_documents']} distinct documents")
    print(f"first places won by a document's {result['top1_won_by']} vector; the wrong ones by "
          f"{result['wrong_top1_won_by']}")
    for both in (False, True):
        for l2 in (0.1, 1.0, 10.0):
            for steps in (50, 200):
                rows = [(mrr10(base[halves[1 - k]], gold[halves[1 - k]]),
                         fit_and_score(q, gold, vecs, owner, len(docs), halves[k], halves[1 - k], both, l2, steps))
                        for k in range(2)]
                mean_before = sum(r[0] for r in rows) / 2
                mean_after = sum(r[1] for r in rows) / 2
                result["folds"].append({"map": "query+document" if both else "query", "l2": l2, "steps": steps,
                                        "held_out_before": [r[0] for r in rows], "held_out_after": [r[1] for r in rows],
                                        "mean_before": mean_before, "mean_after": mean_after})
                print(f"{'query+document' if both else 'query':>14} map, l2 {l2:>4}, {steps:>3} steps: held-out "
                      f"MRR@10 {mean_before:.4f} -> {mean_after:.4f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} ({result['machine']['summary']})")


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
