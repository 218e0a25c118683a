"""Ranking metrics as LongEmbed reports them: Acc@1 (passkey, needle) and nDCG@10 (real tasks).

A run is {qid: [(doc_id, score), ...]} best first. Relevance is graded as in the qrels (LongEmbed's
are all 1). With one relevant document per query, Acc@1 equals mteb's ndcg_at_1, which LongEmbed's
own scripts read for the synthetic tasks.
"""

from __future__ import annotations

import math

import numpy as np

Run = dict[str, list[tuple[str, float]]]
Qrels = dict[str, dict[str, int]]


def rank(scores: np.ndarray, doc_ids: list[str], qids: list[str], depth: int | None = None) -> Run:
    """Rows of a [queries x documents] score matrix to ranked lists; ties keep corpus order (the runner breaks
    them against the system before scoring: runner.break_ties)."""
    if scores.shape != (len(qids), len(doc_ids)):
        raise ValueError(f"score matrix is {scores.shape}, expected ({len(qids)}, {len(doc_ids)})")
    run: Run = {}
    for row, qid in zip(scores, qids):
        order = np.argsort(-row, kind="stable")[:depth]
        run[qid] = [(doc_ids[i], float(row[i])) for i in order]
    return run


def acc_at_1(run: Run, qrels: Qrels) -> float:
    """Share of judged queries whose top document is relevant."""
    hits = [bool(run.get(q)) and qrels[q].get(run[q][0][0], 0) > 0 for q in qrels]
    return sum(hits) / len(hits) if hits else float("nan")


def ndcg_at_k(run: Run, qrels: Qrels, k: int = 10) -> float:
    """Mean nDCG@k (gain = relevance, discount log2(rank + 1)) over judged queries; unretrieved = 0.
    Order-based, as trec_eval: ties are the caller's to break (runner.break_ties)."""
    values = []
    for qid, judged in qrels.items():
        # a document listed twice counts once, at its first position; a negative grade is no gain (as trec_eval)
        docs = list(dict.fromkeys(doc for doc, _ in run.get(qid, [])))[:k]
        gains = [max(judged.get(doc, 0), 0) for doc in docs]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sorted((r for r in judged.values() if r > 0), reverse=True)[:k]
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        values.append(dcg / idcg if idcg > 0 else 0.0)
    return sum(values) / len(values) if values else float("nan")


def mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def known_item(ranked: list[list], relevant: list, k: int = 10) -> dict:
    """Known-item search (one relevant document per query): MRR@k, top-1 and top-3 accuracy, and each query's rank
    of its document (None: not in the top k). `ranked` holds each query's document ids, best first."""
    ranks = [row[:k].index(r) + 1 if r in row[:k] else None for row, r in zip(ranked, relevant)]
    n = len(ranks)
    if not n:  # no query: no score, rather than a ZeroDivisionError
        return {"mrr@10": math.nan, "top1": math.nan, "top3": math.nan, "ranks": []}
    return {"mrr@10": sum(1 / r for r in ranks if r) / n, "top1": sum(r == 1 for r in ranks) / n,
            "top3": sum(bool(r and r <= 3) for r in ranks) / n, "ranks": ranks}
