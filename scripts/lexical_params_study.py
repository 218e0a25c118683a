"""BM25's k1 and b, alone and in hybrid search, on an existing index.

Page BM25 (`longretr.lexical`, Lucene's k1 1.5, b 0.75) normalises a page's term counts by its length (b), so a query
about one detail of a 60k-character page meets a page weighed down by its size: the query sets where dense and
hybrid search are weakest are of that kind (README, Search modes). This rebuilds the index's BM25 from docs.parquet's
text with other k1 and b (the same tokens; nothing is encoded but the queries) and scores each, alone (lexical mode)
and fused with the index's dense fusion scores as `longretr search --mode hybrid` fuses them (convex, w 0.5).

    .venv/bin/python scripts/lexical_params_study.py --index indexes/pgdocs \
        --queries tests/data/pgdocs_queries.jsonl --out results/lexical-params/pgdocs.json
    .venv/bin/python scripts/passage_lexical_study.py --merge results/lexical-params/demo.json pgdocs.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from compare_modes import read_known_items, score  # noqa: E402
from passage_lexical_study import add_set, finish  # noqa: E402

from longretr.fusion import fuse  # noqa: E402
from longretr.lexical import BM25_PARAMS, LexicalIndex  # noqa: E402
from longretr.machine import describe  # noqa: E402
from longretr.search import HYBRID_DEPTH, Searcher  # noqa: E402


def plot(result: dict, path: Path) -> None:
    """Query-weighted MRR@10 of lexical and hybrid search against b, one line per k1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, mode in zip(axes, ("lexical", "hybrid")):
        for k1 in result["k1"]:
            ax.plot(result["b"], [result["all"][f"{mode} k1={k1} b={b}"] for b in result["b"]], marker="o",
                    label=f"k1 {k1}")
        ax.set_xlabel("BM25 b")
        ax.set_ylabel("MRR@10, query-weighted")
        ax.set_title(f"{mode}, {len(result['sets'])} query files", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{result['model']}, {result['index']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--queries", type=Path, nargs="+", required=True)
    ap.add_argument("--k1", default="0.9,1.2,1.5,2.0", help="comma-separated (default 0.9,1.2,1.5,2.0)")
    ap.add_argument("--b", default="0.3,0.5,0.75,0.9", help="comma-separated (default 0.3,0.5,0.75,0.9)")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write (and a PNG beside it)")
    args = ap.parse_args(argv)
    k1s = [float(x) for x in args.k1.split(",")]
    bs = [float(x) for x in args.b.split(",")]
    searcher = Searcher(args.index)
    ids, row_of = searcher._ids, searcher._rows
    docs = searcher.snapshot.docs
    info = describe()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load average {info['load_average']}", file=sys.stderr)
    start = time.perf_counter()
    counts = LexicalIndex.from_docs(docs, None)  # tokenized once, weighted per setting
    variants = {(k1, b): counts.with_params(k1=k1, b=b) for k1 in k1s for b in bs}
    print(f"{len(docs)} documents tokenized in {time.perf_counter() - start:.1f} s ({len(variants)} settings)",
          file=sys.stderr)

    def ranked_ids(rows: list[list[tuple[int, float]]]) -> list[list[str]]:
        return [[ids[row_of[vid]] for vid, _ in row[:10]] for row in rows]

    result = {"index": str(args.index), "model": searcher.snapshot.manifest["model"]["name"], "machine": info,
              "k1": k1s, "b": bs, "index_bm25": BM25_PARAMS, "sets": {}}
    for path in args.queries:
        queries = read_known_items(path)
        texts = [q["text"] for q in queries]
        dense = searcher._dense(searcher.embedder.encode_queries(texts), HYBRID_DEPTH, for_fusion=True)
        runs = {"dense (fusion scores)": score(ranked_ids(dense), queries)}
        for (k1, b), index in variants.items():
            lexical = index.search(texts, HYBRID_DEPTH)
            runs[f"lexical k1={k1} b={b}"] = score(ranked_ids(lexical), queries)
            runs[f"hybrid k1={k1} b={b}"] = score(ranked_ids(
                [fuse(d, p, 10, "convex", 0.5) for d, p in zip(dense, lexical)]), queries)
        add_set(result, path.stem, len(queries), runs)
    return finish(result, args.out, plot)


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
