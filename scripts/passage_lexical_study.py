"""BM25 over passages (MaxP) beside page BM25, alone and in hybrid search, on an existing index.

Page BM25 scores a whole page: a query about one function among dozens in a 60k-character page meets BM25's
length normalisation, which the page's size weighs down. "MaxP" (Dai & Callan 2019; pyserini's MS MARCO
document runs) scores each passage instead and gives a page its best passage's score. The passages are the
index's own: the [start, end) characters behind each span vector (docs.parquet's `passages`; a document without
them is one passage), optionally joined into windows of W consecutive spans (stride one span). Nothing is encoded
but the queries.

Each variant is scored per query file (MRR@10, top-1, top-3) against the queries' known items:
- lexical: page BM25 (the index's), passage MaxP, and their convex mix;
- hybrid: the index's dense fusion scores (as `longretr search --mode hybrid`) fused by convex min-max with page
  BM25 (the default), with passage MaxP in its place, or with both (weights dense / page / passage).

    .venv/bin/python scripts/passage_lexical_study.py --index indexes/demo-cmp \
        --queries tests/data/demo_queries_fresh3.jsonl --out results/passage-lexical/demo.json
    .venv/bin/python scripts/passage_lexical_study.py --merge results/passage-lexical/demo.json pgdocs.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from compare_modes import read_known_items, score  # noqa: E402

from longretr.fusion import fuse, minmax  # noqa: E402
from longretr.lexical import LexicalIndex  # noqa: E402
from longretr.machine import describe  # noqa: E402
from longretr.search import HYBRID_DEPTH, Searcher  # noqa: E402

# (dense, page BM25, passage BM25) weights of the convex hybrids; the first is the default's fusion
HYBRIDS = {"page": (0.5, 0.5, 0.0), "passage": (0.5, 0.0, 0.5), "page+passage": (0.5, 0.25, 0.25)}


def passage_units(searcher: Searcher, window: int) -> tuple[list[str], np.ndarray]:
    """Texts and owning vids of every passage: each document's spans (its lead left out, being the first span's
    start) joined W at a time with a stride of one span; a document without spans is one passage."""
    docs = searcher.snapshot.docs
    lead = set(searcher._lead_vids.tolist())
    texts, vids = [], []
    for vid, text, passages in zip(docs.column("vid").to_pylist(), docs.column("text").to_pylist(),
                                   docs.column("passages").to_pylist()):
        spans = list(passages or [])[1 if vid in lead else 0:]
        if not spans:
            spans = [[0, len(text)]]
        for i in range(max(1, len(spans) - window + 1)):
            texts.append(text[spans[i][0]:spans[min(i + window, len(spans)) - 1][1]])
            vids.append(vid)
    return texts, np.asarray(vids, dtype="int64")


def max_passage(index: LexicalIndex, queries: list[str], depth: int) -> list[list[tuple[int, float]]]:
    """Per query, documents by their best passage's BM25 score, best first, `depth` deep."""
    out = []
    for row in index.search(queries, index.count):
        best: dict[int, float] = {}
        for vid, s in row:  # best first, so a document's first passage is its best
            best.setdefault(vid, s)
        out.append(list(best.items())[:depth])
    return out


def convex(lists: list[list[tuple[int, float]]], weights: tuple[float, ...], k: int) -> list[tuple[int, float]]:
    """sum of w * minmax(list) (missing: 0), best first, ties by vid; `fuse` generalised to any number of lists."""
    fused: dict[int, float] = {}
    for ranked, w in zip(lists, weights):
        if w:
            for (vid, _), s in zip(ranked, minmax(ranked)):
                fused[vid] = fused.get(vid, 0.0) + w * s
    return sorted(fused.items(), key=lambda x: (-x[1], x[0]))[:k]


def plot(result: dict, path: Path) -> None:
    """MRR@10 per query file: page BM25, the default hybrid and the hybrids with passages (one span)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["lexical: page", "hybrid: page (the default)", "hybrid: passage x1", "hybrid: page+passage x1"]
    names = list(result["sets"])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names)), 4))
    width = 0.8 / len(labels)
    for n, label in enumerate(labels):
        if label in result["all"]:
            ax.bar([i + (n - len(labels) / 2 + 0.5) * width for i in range(len(names))],
                   [result["sets"][s]["runs"][label]["mrr@10"] for s in names], width, label=label)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("MRR@10")
    ax.set_title(f"{result['model']}, {result['index']}: BM25 over pages and passages", fontsize=9)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def weighted_means(sets: dict) -> dict:
    """Each variant's MRR@10 over all the query files' queries (query-weighted), printed."""
    total = sum(s["queries"] for s in sets.values())
    means = {label: sum(s["runs"][label]["mrr@10"] * s["queries"] for s in sets.values()) / total
             for label in next(iter(sets.values()))["runs"]}
    print(f"\nall {total} queries, MRR@10 (query-weighted)")
    for label, v in means.items():
        print(f"  {label:32s} {v:.4f}")
    return means


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=Path)
    ap.add_argument("--queries", type=Path, nargs="+")
    ap.add_argument("--windows", default="1,2", help="Passage sizes in spans, comma-separated (default 1,2).")
    ap.add_argument("--out", type=Path, help="JSON file to write")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                    help="Instead: the query-weighted means over the query files of earlier outputs (e.g. two corpora)")
    args = ap.parse_args(argv)
    if args.merge:
        return {"all": weighted_means({f"{p}:{name}": s for p in args.merge
                                       for name, s in json.loads(p.read_text())["sets"].items()})}
    if not (args.index and args.queries and args.out):
        ap.error("--index, --queries and --out are needed (or --merge)")
    searcher = Searcher(args.index)
    ids = searcher._ids
    row_of = searcher._rows
    sets = {p.stem: read_known_items(p) for p in args.queries}
    info = describe()
    print(f"machine: {info['cpu']}, {info['cores']} cores, load average {info['load_average']}", file=sys.stderr)
    passage_indexes = {}
    for w in (int(x) for x in args.windows.split(",")):
        start = time.perf_counter()
        texts, vids = passage_units(searcher, w)
        passage_indexes[w] = LexicalIndex.build(texts, vids)
        print(f"passages of {w} span(s): {len(texts)} in {time.perf_counter() - start:.1f} s", file=sys.stderr)

    def ranked_ids(rows: list[list[tuple[int, float]]]) -> list[list[str]]:
        return [[ids[row_of[vid]] for vid, _ in row[:10]] for row in rows]

    result = {"index": str(args.index), "model": searcher.snapshot.manifest["model"]["name"], "machine": info,
              "windows_in_spans": sorted(passage_indexes), "hybrid_weights": HYBRIDS, "sets": {}}
    for name, queries in sets.items():
        texts = [q["text"] for q in queries]
        dense = searcher._dense(searcher.embedder.encode_queries(texts), HYBRID_DEPTH, for_fusion=True)
        page = searcher.snapshot.lexical.search(texts, HYBRID_DEPTH)
        runs = {"dense (fusion scores)": score(ranked_ids(dense), queries),
                "lexical: page": score(ranked_ids(page), queries),
                "hybrid: page (the default)": score(ranked_ids(
                    [fuse(d, p, 10, "convex", 0.5) for d, p in zip(dense, page)]), queries)}
        for w, index in passage_indexes.items():
            maxp = max_passage(index, texts, HYBRID_DEPTH)
            runs[f"lexical: passage x{w}"] = score(ranked_ids(maxp), queries)
            runs[f"lexical: page+passage x{w}"] = score(ranked_ids(
                [convex([p, m], (0.5, 0.5), 10) for p, m in zip(page, maxp)]), queries)
            for label, weights in list(HYBRIDS.items())[1:]:
                runs[f"hybrid: {label} x{w}"] = score(ranked_ids(
                    [convex([d, p, m], weights, 10) for d, p, m in zip(dense, page, maxp)]), queries)
        add_set(result, name, len(queries), runs)
    return finish(result, args.out, plot)


def add_set(result: dict, name: str, queries: int, runs: dict) -> None:
    """One query file's runs into the result, printed."""
    result["sets"][name] = {"queries": queries, "runs": runs}
    print(f"\n{name} ({queries} queries): MRR@10 / top-1 / top-3")
    for label, r in runs.items():
        print(f"  {label:32s} {r['mrr@10']:.3f} / {r['top1']:.3f} / {r['top3']:.3f}")


def finish(result: dict, out: Path, plot) -> dict:
    """The query-weighted means (printed), then the JSON and its plot(result, PNG path) written."""
    result["all"] = weighted_means(result["sets"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and .png", file=sys.stderr)
    return result


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
