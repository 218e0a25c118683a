"""Compare the search modes (dense, lexical, hybrid) of one index on a known-item query set.

Each query names the one document it should find; reported: MRR@10, top-1 and top-3 accuracy,
query latency. Hybrid is also run with other fusion settings (RRF and convex at several dense
weights) so the index's default can be chosen on evidence. Writes JSON + a PNG under --out.

    .venv/bin/python scripts/compare_modes.py --index indexes/demo-cmp --corpus corpus

A missing index is built first from --corpus (the demo corpus is written there if the folder does
not exist): with the default model that takes about 20 minutes on 2 cores with AMX-BF16, 35 minutes on a 2-core
AMD EPYC with AVX512-BF16 (the demo index, 2026-12-07), about 100 minutes on a 2-core AMD EPYC with AVX2 only and
1 h 45 min on a 2-core Xeon without AMX (both fp32), so it is reused. (AVX2 EPYC, 2026-12-04: the PostgreSQL index,
1.29M tokens, took 80 minutes; the demo index, 1.50M, about 100 minutes over two runs.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from longretr.config import load_config  # noqa: E402
from longretr.evaluate.metrics import known_item  # noqa: E402
from longretr.machine import describe  # noqa: E402
from longretr.search import Searcher  # noqa: E402
from longretr.store import read_manifest  # noqa: E402

WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7)
VARIANTS = [("rrf", w) for w in WEIGHTS] + [("convex", w) for w in WEIGHTS]


def read_known_items(path: Path) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append({"id": str(row["id"]), "text": str(row["text"]), "relevant": str(row["relevant"])})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SystemExit(f"{path}:{n}: expected a JSON object with id, text and relevant ({e})") from e
    if not rows:
        raise SystemExit(f"{path}: no queries")
    return rows


def score(ranked_ids: list[list[str]], queries: list[dict], k: int = 10) -> dict:
    """MRR@k, top-1 and top-3 accuracy, and each query's rank of its document (None: not in top k)."""
    return known_item(ranked_ids, [q["relevant"] for q in queries], k)


def evaluate(searcher: Searcher, queries: list[dict], k: int = 10) -> dict:
    """The three modes as the index is configured (timed), then hybrid with each fusion variant
    (query vectors encoded once for the variants, so their latency is not reported)."""
    texts = [q["text"] for q in queries]
    configured = dict(searcher.ranking)
    runs: dict[str, dict] = {}
    # A Searcher loads its model and index files at its first search: 5 s on an index built earlier, which dense mode,
    # timed first, counted as 110 ms a query over 44 queries.
    searcher.search(texts[:1], k, mode="hybrid")
    for mode in ("dense", "lexical", "hybrid"):
        start = time.perf_counter()
        hits = searcher.search(texts, k, mode=mode)
        runs[mode] = {**score([[h.id for h in row] for row in hits], queries, k),
                      "ms_per_query": 1000 * (time.perf_counter() - start) / len(texts),
                      "ranking": {**configured, "mode": mode}}
    vectors = searcher.embedder.encode_queries(texts)
    encode = searcher.embedder.encode_queries
    searcher.embedder.encode_queries = lambda qs: vectors if list(qs) == texts else encode(qs)
    try:
        for fusion, weight in VARIANTS:
            if (fusion, weight) == (configured["fusion"], configured["weight"]):
                continue  # the same as "hybrid" above
            searcher.ranking = {**configured, "fusion": fusion, "weight": weight}
            hits = searcher.search(texts, k, mode="hybrid")
            runs[f"hybrid-{fusion}-w{weight}"] = {**score([[h.id for h in row] for row in hits], queries, k),
                                                  "ms_per_query": None,
                                                  "ranking": {**searcher.ranking, "mode": "hybrid"}}
    finally:
        searcher.ranking = configured
        searcher.embedder.encode_queries = encode
    return runs


def minilm_reference(corpus: Path, ids: list[str], queries: list[dict], k: int = 10) -> dict | None:
    """The short-context baseline people use today on the same documents and queries: all-MiniLM-L6-v2 over
    256-piece chunks, a document scored by its best chunk (longretr.evaluate.baselines). None when the index's
    documents are not files under `corpus` (e.g. rows of a .jsonl). The chunk vectors are cached under
    $LONGRETR_HOME/cache (4-7 minutes of encoding per corpus on 2 cores, the same for every model scored)."""
    import numpy as np

    from longretr.config import longretr_home
    from longretr.corpus import read_file
    from longretr.evaluate.baselines import ChunkedMiniLMScorer
    from longretr.evaluate.data import RetrievalSet

    if not all((corpus / i).is_file() for i in ids):
        print(f"minilm reference skipped: the index's documents are not all files under {corpus}", file=sys.stderr)
        return None
    docs = {i: read_file(corpus / i, corpus)[0].text for i in ids}  # the text the index saw (HTML: visible text)
    s = RetrievalSet("known-item", "test", docs, {q["id"]: q["text"] for q in queries},
                     {q["id"]: {q["relevant"]: 1} for q in queries})
    scored = ChunkedMiniLMScorer(256, cache=longretr_home() / "cache").score(s, progress=False)
    ranked = [[ids[j] for j in np.argsort(-row, kind="stable")[:k]] for row in scored.scores]
    return {**score(ranked, queries, k), "ms_per_query": None, "seconds": round(scored.seconds, 1),
            "chunk_vectors_from_cache": scored.stats["chunk_vectors_from_cache"],
            "ranking": {"mode": "minilm-chunked (reference, 256-piece chunks)"}}


def table(runs: dict) -> str:
    lines = ["| mode | fusion | MRR@10 | top-1 | top-3 | ms/query |", "|---|---|---|---|---|---|"]
    for name, r in runs.items():
        fusion = f"{r['ranking']['fusion']}, w={r['ranking']['weight']}" if r["ranking"]["mode"] == "hybrid" else "-"
        ms = "" if r["ms_per_query"] is None else f"{r['ms_per_query']:.1f}"
        lines.append(f"| {name} | {fusion} | {r['mrr@10']:.3f} | {r['top1']:.3f} | {r['top3']:.3f} | {ms} |")
    return "\n".join(lines)


def plot(runs: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names)), 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [runs[n]["mrr@10"] for n in names], 0.4, label="MRR@10")
    ax.bar([x + 0.2 for x in xs], [runs[n]["top3"] for n in names], 0.4, label="top-3 accuracy")
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def ensure_index(index: Path, corpus: Path | None, model: str | None) -> None:
    """Build the index if it is missing; refuse one built by another model than an explicit --model."""
    manifest = read_manifest(index)
    if manifest:
        if model and manifest["model_fingerprint"] != load_config(model).fingerprint():
            raise SystemExit(f"{index}: built by {manifest.get('model', {}).get('name', 'another model')}, not "
                             f"{model}; give another --index (or none of --model to score the index as it is)")
        return
    if corpus is None:
        raise SystemExit(f"{index}: no index; pass --corpus to build it (20 min to 2 h on 2 CPU cores)")
    if not corpus.exists():
        from longretr.democorpus import build

        print(f"writing the demo corpus to {corpus}/ ({build(corpus, 300)} documents)", file=sys.stderr)
    from longretr.embedder import Embedder
    from longretr.indexer import index_corpus

    summary = index_corpus(corpus, index, Embedder(model or "default"))
    print(f"{index}: {summary.line()}", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, default=Path("indexes/demo-cmp"))
    ap.add_argument("--corpus", type=Path, default=None, help="Build the index from here if it is missing.")
    ap.add_argument("--model", help="Model config: the one a missing index is built with (default: the default "
                    "model), and the one an existing index must have been built with.")
    ap.add_argument("--queries", type=Path, default=REPO / "tests/data/demo_queries.jsonl")
    ap.add_argument("--out", type=Path, default=Path("results/compare_modes"))
    args = ap.parse_args(argv)
    if not args.queries.is_file():
        ap.error(f"--queries {args.queries}: no such file")
    if args.corpus is not None and args.corpus.exists() and not args.corpus.is_dir():
        ap.error(f"--corpus {args.corpus}: not a folder")
    queries = read_known_items(args.queries)
    ensure_index(args.index, args.corpus, args.model)
    searcher = Searcher(args.index)
    known = set(searcher.snapshot.docs.column("id").to_pylist())
    missing = sorted({q["relevant"] for q in queries} - known)
    if missing:
        raise SystemExit(f"{args.queries}: relevant documents not in {args.index}: {', '.join(missing[:10])}")
    info = describe()
    print(f"machine: {info['cpu']}, {info['cores']} cores, GPU {info['gpu'] or 'none'}, "
          f"torch threads {info['torch_threads']}, load average {info['load_average']}")
    runs = evaluate(searcher, queries)
    if args.corpus is not None:
        reference = minilm_reference(args.corpus, sorted(known), queries)
        if reference is not None:
            runs["minilm-chunked"] = reference
    model = searcher.snapshot.manifest["model"]["name"]
    best = max(("dense", "lexical", "hybrid"), key=lambda m: (runs[m]["mrr@10"], runs[m]["top3"]))
    result = {"index": str(args.index), "model": model, "documents": searcher.count, "queries": len(queries),
              "query_file": str(args.queries), "configured_ranking": searcher.ranking, "best_mode": best,
              "machine": info, "runs": runs, "query_ids": [q["id"] for q in queries]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare_modes.json").write_text(json.dumps(result, indent=2))
    plot(runs, args.out / "compare_modes.png",
         f"{model}, {searcher.count} docs, {len(queries)} known-item queries ({args.queries.name})")
    print(table(runs))
    print(f"best of dense/lexical/hybrid (as configured: {searcher.ranking['fusion']}, w={searcher.ranking['weight']}):"
          f" {best}; wrote {args.out}/compare_modes.json and .png")
    return result


if __name__ == "__main__":
    main()
