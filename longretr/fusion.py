"""Fusing a dense and a lexical ranking into one list (hybrid search).

Each input is a ranked list of (key, score), best first, usually cut at some depth, so a document
may be missing from one list. Two methods:

- "rrf": reciprocal rank fusion, sum of w_i / (rrf_k + rank_i). Needs no score calibration. Equal
  scores in one list share a rank (the best of the tie), so the order inside a tie does not matter.
- "convex": w * minmax(dense) + (1 - w) * minmax(lexical), scores min-max normalised over each
  list's own candidates. A document missing from a list gets 0 there (below everything retrieved).

`weight` is the dense list's weight in [0, 1] for both methods (0.5 is plain RRF, halved).
Fused ties are broken by the best rank in any list, then by key (keys of one sortable type, e.g. vids),
so results are deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

Ranked = Sequence[tuple[Hashable, float]]
METHODS = ("rrf", "convex")
MODES = ("dense", "lexical", "hybrid")
# The index manifest's "ranking" section; `longretr index --mode/--fusion/--weight/--rrf-k` set it.
# Defaults measured with the trained default model (README, Search modes; scripts/compare_modes.py,
# scripts/span_scoring_study.py). Demo queries: hybrid convex w=0.5 MRR@10 0.850, lexical 0.770, dense 0.820;
# kernel/Debian titles and sentences and LongEmbed passkey/needle: BM25 wins; ReasonAug: dense wins. Hybrid is near the
# best on each and never the worst. RRF beat convex on the demo queries at some weights and lost on the other two
# sets. w=0.5 is an equal weighting, and it is near the best weight on the demo queries, so it may be fitted to them.
DEFAULT_RANKING = {"mode": "hybrid", "fusion": "convex", "weight": 0.5, "rrf_k": 60}


def ranking_config(base: dict | None = None, **overrides) -> dict:
    """DEFAULT_RANKING, updated by `base` (e.g. an existing manifest's) and then by the overrides
    that are not None; validated."""
    if base is not None and not isinstance(base, dict):  # a hand-edited manifest
        raise ValueError(f"ranking settings must be a table of {sorted(DEFAULT_RANKING)}, got {base!r}")
    config = {**DEFAULT_RANKING, **(base or {}), **{k: v for k, v in overrides.items() if v is not None}}
    unknown = set(config) - set(DEFAULT_RANKING)
    if unknown:
        raise ValueError(f"unknown ranking settings {sorted(unknown)}; known: {sorted(DEFAULT_RANKING)}")
    check_mode(config["mode"])
    check_params(config["fusion"], config["weight"], config["rrf_k"])
    return config


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"search mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


def check_params(method: str, weight: float, rrf_k: float) -> None:
    """Each message names the setting as the code and a manifest spell it and as `longretr index` takes it (--fusion,
    --weight, --rrf-k): a user of either sees it, and the existing wording stays for callers matching it."""
    if method not in METHODS:
        raise ValueError(f"fusion method {method!r} (--fusion) is not one of {', '.join(METHODS)}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight must be between 0 and 1 (--weight, the dense list's share), got {weight}")
    # finite too: an infinite k makes every rank score 0, and is written to the manifest as non-standard JSON
    if isinstance(rrf_k, bool) or not isinstance(rrf_k, (int, float)) or not 0 < rrf_k < math.inf:
        raise ValueError(f"rrf_k must be > 0 and finite (--rrf-k), got {rrf_k}")


def tied_ranks(ranked: Ranked) -> list[int]:
    """1-based ranks where equal scores share the rank of the first of their group ("1224")."""
    ranks: list[int] = []
    for i, (_, score) in enumerate(ranked):
        ranks.append(ranks[-1] if i and score == ranked[i - 1][1] else i + 1)
    return ranks


def minmax(ranked: Ranked) -> list[float]:
    """Scores scaled to [0, 1] within the list; a list whose scores are all equal maps to 1."""
    if not ranked:
        return []
    scores = [s for _, s in ranked]
    lo, hi = min(scores), max(scores)
    return [1.0 if hi == lo else (s - lo) / (hi - lo) for s in scores]


def fuse_ranked(dense: Ranked, lexical: Ranked, k: int, ranking: dict = DEFAULT_RANKING,
                window: int | None = None) -> list[tuple[Hashable, float]]:
    """`fuse` with the method, weight and rrf_k of a ranking config (an index manifest's, or the default)."""
    return fuse(dense, lexical, k, ranking["fusion"], ranking["weight"], ranking["rrf_k"], window)


def fuse(dense: Ranked, lexical: Ranked, k: int, method: str = "rrf", weight: float = 0.5,
         rrf_k: float = 60, window: int | None = None) -> list[tuple[Hashable, float]]:
    """The top k of the union of both lists under the fused score, best first.

    `window`: only each list's first `window` entries are scored (and min-max scaled); a deeper one counts as missing
    from that list, though still a candidate. So lists longer than the window, fetched for a larger k, rank the
    documents a smaller k finds as it does (a search for 200 starts with the search for 10); the documents past both
    windows follow, by their best place in a list (not a tied rank: a tie may reach back into the window)."""
    check_params(method, weight, rrf_k)
    fused: dict[Hashable, float] = {}
    best_rank: dict[Hashable, int] = {}
    for ranked, w in ((dense, weight), (lexical, 1.0 - weight)):
        ranks = tied_ranks(ranked)
        scored = ranked if window is None else ranked[:window]
        # past the window, a document's place in the list: a tie with an entry inside would lend it that rank, and a
        # deeper list (a larger k) would put it ahead of documents a smaller k returned with the same fused score
        ranks[len(scored):] = range(len(scored) + 1, len(ranked) + 1)
        parts = [w / (rrf_k + r) for r in ranks[:len(scored)]] if method == "rrf" else \
            [w * s for s in minmax(scored)]
        parts += [0.0] * (len(ranked) - len(scored))
        seen: set[Hashable] = set()
        for (key, _), rank, part in zip(ranked, ranks, parts):
            if key in seen:
                raise ValueError(f"document {key!r} appears twice in one ranked list")
            seen.add(key)
            fused[key] = fused.get(key, 0.0) + part
            best_rank[key] = min(best_rank.get(key, rank), rank)
    order = sorted(fused, key=lambda key: (-fused[key], best_rank[key], key))
    return [(key, fused[key]) for key in order[:max(k, 0)]]


# Convex fusion min-max normalises the dense scores, so it leans on their spread, which the best of many span vectors
# narrows: the list it fuses adds each document's whole/lead score back (docs/training-studies.md, "Scoring from span
# vectors": hybrid MRR@10 0.831 -> 0.850 on the demo queries, 0.980 -> 0.985 and 0.883 -> 0.892 on the other two
# sets). Dense mode keeps the best cosine alone: there the same rule gained nowhere (dense MRR@10 0.808 / 0.861 / 0.849
# -> 0.807 / 0.854 / 0.851).
FUSION_DOC_WEIGHT = 0.5


def fusion_scores(best: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """(best + FUSION_DOC_WEIGHT * doc) / (1 + FUSION_DOC_WEIGHT): `best`, a document's best cosine over all its
    vectors; `doc`, the higher of its whole and lead cosines. Never above `best`; equal to it without span vectors."""
    return (best + FUSION_DOC_WEIGHT * doc) / (1 + FUSION_DOC_WEIGHT)
