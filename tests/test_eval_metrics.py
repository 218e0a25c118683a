"""Acc@1, nDCG@10 and the Table-2 summary against hand-computed values."""

import math

import numpy as np
import pytest

from longretr.evaluate.metrics import acc_at_1, known_item, ndcg_at_k, rank
from longretr.evaluate.runner import summarise


def test_acc_at_1_counts_relevant_top_documents():
    run = {"q1": [("a", 0.9), ("b", 0.1)], "q2": [("c", 0.8), ("d", 0.7)], "q3": [("e", 0.5)]}
    qrels = {"q1": {"a": 1}, "q2": {"d": 1}, "q3": {"x": 1}}
    assert acc_at_1(run, qrels) == pytest.approx(1 / 3)


def test_acc_at_1_scores_an_unranked_query_as_a_miss():
    assert acc_at_1({"q1": [("a", 1.0)]}, {"q1": {"a": 1}, "q2": {"b": 1}}) == 0.5


def test_ndcg_single_relevant_document_by_rank():
    qrels = {"q": {"rel": 1}}
    at = {r: [(f"x{i}", 0.0) for i in range(r - 1)] + [("rel", 0.0)] for r in (1, 2, 3, 10, 11)}
    assert ndcg_at_k({"q": at[1]}, qrels) == 1.0
    assert ndcg_at_k({"q": at[2]}, qrels) == pytest.approx(1 / math.log2(3))  # 0.6309
    assert ndcg_at_k({"q": at[3]}, qrels) == pytest.approx(0.5)  # 1 / log2(4)
    assert ndcg_at_k({"q": at[10]}, qrels) == pytest.approx(1 / math.log2(11))
    assert ndcg_at_k({"q": at[11]}, qrels) == 0.0  # outside the top 10


def test_ndcg_two_relevant_documents_and_graded_relevance():
    run = {"q": [("a", 3.0), ("x", 2.0), ("b", 1.0)]}
    # binary: DCG = 1 + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.6309
    assert ndcg_at_k(run, {"q": {"a": 1, "b": 1}}) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # graded: DCG = 1 + 2/2 = 2; IDCG = 2 + 1/log2(3) = 2.6309
    assert ndcg_at_k(run, {"q": {"a": 1, "b": 2}}) == pytest.approx(2 / (2 + 1 / math.log2(3)))


def test_ndcg_averages_over_judged_queries():
    run = {"q1": [("a", 1.0)], "q2": [("x", 1.0), ("b", 0.5)]}
    value = ndcg_at_k(run, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert value == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_ndcg_counts_a_document_listed_twice_once_at_its_first_position():
    assert ndcg_at_k({"q": [("a", 1.0), ("a", 0.9)]}, {"q": {"a": 1}}) == 1.0  # was 1.63, above the ideal
    # the repeat is dropped: b moves up to rank 2
    run = {"q": [("x", 1.0), ("x", 0.9), ("b", 0.8)]}
    assert ndcg_at_k(run, {"q": {"a": 1, "b": 1}}) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_ndcg_gives_a_negative_grade_no_gain():
    run = {"q": [("bad", 1.0), ("good", 0.5)]}
    assert ndcg_at_k(run, {"q": {"good": 1, "bad": -1}}) == pytest.approx(1 / math.log2(3))  # as trec_eval; was -0.37


def test_known_item_with_no_queries_is_nan_not_a_crash():
    scores = known_item([], [])
    assert scores["ranks"] == [] and all(math.isnan(scores[k]) for k in ("mrr@10", "top1", "top3"))


def test_rank_sorts_by_score_and_breaks_ties_by_corpus_order():
    scores = np.array([[0.1, 0.5, 0.5, 0.9], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    run = rank(scores, ["a", "b", "c", "d"], ["q1", "q2"], depth=3)
    assert [d for d, _ in run["q1"]] == ["d", "b", "c"]
    assert [d for d, _ in run["q2"]] == ["a", "b", "c"]
    with pytest.raises(ValueError, match="score matrix"):
        rank(scores, ["a", "b"], ["q1", "q2"])


def test_summary_splits_lengths_at_4k_and_averages_columns():
    rows = [{"task": "passkey", "context_length": x, "value": v}
            for x, v in ((256, 100.0), (4096, 50.0), (8192, 20.0), (32768, 0.0))]
    rows += [{"task": "needle", "context_length": x, "value": v} for x, v in ((512, 80.0), (16384, 10.0))]
    rows += [{"task": t, "context_length": None, "value": v}
             for t, v in (("narrativeqa", 40.0), ("qmsum", 30.0), ("summ_screen_fd", 90.0), ("2wikimqa", 70.0))]
    scores, s = summarise(rows)  # percentages, rounded to 2 decimals
    assert scores["passkey"] == {"256": 100.0, "4096": 50.0, "8192": 20.0, "32768": 0.0}
    assert (s["passkey_le4k"], s["passkey_gt4k"], s["needle_le4k"], s["needle_gt4k"]) == (75.0, 10.0, 80.0, 10.0)
    assert s["avg"] == pytest.approx((75 + 10 + 80 + 10 + 40 + 30 + 90 + 70) / 8, abs=0.01)
    assert s["synthetic_avg"] == pytest.approx((75 + 10 + 80 + 10) / 4, abs=0.01)
    # LongEmbed's own average: passkey and needle over all lengths, then the six tasks
    assert s["longembed_avg"] == pytest.approx((42.5 + 45 + 40 + 30 + 90 + 70) / 6, abs=0.01)


def test_summary_leaves_the_average_out_when_a_column_is_missing():
    _, s = summarise([{"task": "passkey", "context_length": 256, "value": 100.0}])
    assert s["passkey_le4k"] == 100.0 and s["passkey_gt4k"] is None and s["avg"] is None
