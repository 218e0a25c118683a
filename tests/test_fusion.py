"""Fusion on hand-made rankings: exact scores, ties, documents missing from one list, k > corpus."""

import random

import pytest

from longretr.fusion import DEFAULT_RANKING, fuse, minmax, ranking_config, tied_ranks


def test_rrf_scores_are_reciprocal_ranks():
    dense = [("a", 0.9), ("b", 0.8), ("c", 0.7)]
    lexical = [("c", 12.0), ("a", 11.0), ("b", 3.0)]
    fused = dict(fuse(dense, lexical, k=3, method="rrf", weight=0.5, rrf_k=60))
    assert fused["a"] == pytest.approx(0.5 / 61 + 0.5 / 62)
    assert fused["b"] == pytest.approx(0.5 / 62 + 0.5 / 63)
    assert fused["c"] == pytest.approx(0.5 / 63 + 0.5 / 61)
    assert [key for key, _ in fuse(dense, lexical, k=3)] == ["a", "c", "b"]


def test_document_missing_from_one_list():
    dense = [("a", 0.9), ("b", 0.5)]
    lexical = [("c", 7.0), ("b", 6.0)]
    rrf = dict(fuse(dense, lexical, k=10, method="rrf", weight=0.5, rrf_k=60))
    assert rrf["a"] == pytest.approx(0.5 / 61)  # no lexical contribution at all
    assert rrf["b"] == pytest.approx(0.5 / 62 + 0.5 / 62)
    assert max(rrf, key=rrf.get) == "b"  # in both lists beats first in one
    convex = dict(fuse(dense, lexical, k=10, method="convex", weight=0.5))
    assert convex == pytest.approx({"a": 0.5, "b": 0.0, "c": 0.5})  # b is last in both lists: 0 after min-max


def test_convex_weight_and_normalisation():
    dense = [("a", 0.80), ("b", 0.60), ("c", 0.40)]
    lexical = [("b", 30.0), ("c", 20.0), ("a", 10.0)]
    fused = dict(fuse(dense, lexical, k=3, method="convex", weight=0.25))
    assert fused == pytest.approx({"a": 0.25 * 1.0 + 0.75 * 0.0, "b": 0.25 * 0.5 + 0.75 * 1.0,
                                   "c": 0.25 * 0.0 + 0.75 * 0.5})
    assert [k for k, _ in fuse(dense, lexical, 3, "convex", weight=1.0)] == ["a", "b", "c"]  # dense only
    assert [k for k, _ in fuse(dense, lexical, 3, "convex", weight=0.0)] == ["b", "c", "a"]  # lexical only
    assert [k for k, _ in fuse(dense, lexical, 3, "rrf", weight=0.0)] == ["b", "c", "a"]


def test_ties_share_a_rank_and_break_deterministically():
    assert tied_ranks([("a", 3.0), ("b", 2.0), ("c", 2.0), ("d", 1.0)]) == [1, 2, 2, 4]
    assert minmax([("a", 5.0), ("b", 5.0)]) == [1.0, 1.0]
    # b and c tie in the dense list: the order they were listed in must not matter
    one = fuse([("a", 0.9), ("b", 0.5), ("c", 0.5)], [("c", 2.0)], k=3)
    two = fuse([("a", 0.9), ("c", 0.5), ("b", 0.5)], [("c", 2.0)], k=3)
    assert one == two and [k for k, _ in one] == ["c", "a", "b"]
    # a full tie in the fused score: best rank in any list first, then the key
    fused = fuse([("y", 1.0), ("x", 0.5)], [("x", 1.0), ("y", 0.5)], k=2)
    assert fused[0][1] == pytest.approx(fused[1][1]) and [k for k, _ in fused] == ["x", "y"]


def test_k_larger_than_corpus_and_empty_lists():
    dense = [(1, 0.9), (2, 0.1)]
    assert [k for k, _ in fuse(dense, [(3, 1.0)], k=100)] == [1, 3, 2]
    assert fuse([], [], k=5) == []
    assert fuse(dense, [], k=1, method="convex") == [(1, pytest.approx(0.5))]
    assert fuse(dense, [], k=0) == []


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="fusion method 'sum'"):
        fuse([], [], 3, method="sum")
    with pytest.raises(ValueError, match="weight must be between 0 and 1"):
        fuse([], [], 3, weight=1.5)
    with pytest.raises(ValueError, match="rrf_k must be > 0"):
        fuse([], [], 3, rrf_k=0)
    with pytest.raises(ValueError, match="appears twice"):
        fuse([("a", 1.0), ("a", 0.5)], [], 3)


def test_ranking_config_merges_and_validates():
    assert ranking_config() == DEFAULT_RANKING
    base = {"mode": "dense", "fusion": "convex", "weight": 0.3, "rrf_k": 60}
    assert ranking_config(base, weight=None, mode="lexical") == {**base, "mode": "lexical"}
    with pytest.raises(ValueError, match="search mode 'semantic'"):
        ranking_config(mode="semantic")
    with pytest.raises(ValueError, match="unknown ranking settings"):
        ranking_config({"alpha": 1})


def test_bad_parameters_name_the_index_option_too():
    # `longretr index --rrf-k 0` showed only the Python name, rrf_k
    for kwargs, option in [({"method": "sum"}, "--fusion"), ({"weight": -0.5}, "--weight"), ({"rrf_k": 0}, "--rrf-k")]:
        with pytest.raises(ValueError, match=f"\\({option}[,)]"):
            fuse([], [], 3, **kwargs)


@pytest.mark.parametrize("method", ["rrf", "convex"])
def test_a_window_makes_a_larger_k_only_add_results(method):
    """Lists fetched deeper for a larger k used to change the fused order of the first results (convex min-max
    scaling and RRF contributions over the deeper lists): `longretr search -k 200` began differently from `-k 10` on
    29 of 44 demo queries. With a window, entries past it count as missing."""
    rng = random.Random(0)
    docs = list(range(400))
    dense = sorted(((d, rng.random()) for d in docs), key=lambda t: -t[1])
    lexical = sorted(((d, rng.random() * 20) for d in rng.sample(docs, 300)), key=lambda t: -t[1])
    small = fuse(dense[:100], lexical[:100], 10, method)
    assert fuse(dense[:100], lexical[:100], 10, method, window=100) == small  # the window changes nothing at k <= it
    for k in (150, 250, 400):
        deep = fuse(dense[:k], lexical[:k], k, method, window=100)
        assert deep[:10] == small and len(deep) == min(k, len(docs))
        assert deep[:150] == fuse(dense[:100], lexical[:100], 150, method, window=100)[:150]
        assert [key for key, _ in deep][:len(deep)] == [key for key, _ in fuse(dense, lexical, 400, method,
                                                                                 window=100)][:len(deep)]
    assert fuse(dense[:250], lexical[:250], 250, method)[:10] != small  # without it, the first ten move


@pytest.mark.parametrize("method", ["rrf", "convex"])
def test_a_tie_reaching_past_the_window_lends_no_rank_to_a_larger_k(method):
    """Entries past the window took their tie's rank as their best rank: a document deep in the dense list, tied (a
    duplicate's cosine) with one inside the window, moved ahead of a document a smaller k had placed first among equal
    fused scores, so a larger k reordered the results a smaller one returned."""
    dense = [(15, 3.0), (17, 3.0), (20, 3.0), (22, 3.0), (24, 3.0), (26, 3.0), (29, 3.0)]
    lexical = [(30, 3.0), (1, 2.0), (29, 2.0)]
    six = fuse(dense[:6], lexical[:6], 6, method, window=3)
    assert [key for key, _ in six] == [15, 17, 20, 30, 1, 29]  # 1 and 29: equal fused scores, rank 2 in lexical
    for k in (7, 8):
        assert fuse(dense[:k], lexical[:k], k, method, window=3)[:6] == six
