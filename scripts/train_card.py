"""Validation scores for the training card: a model config before/after training, measured the
same way. Four query sets:
  reasonaug-q2c  held-out ReasonAug concepts: problem -> its concept's definition (among all held-out definitions)
  longdoc        held-out kernel/Debian documents: title or copied sentence -> the document
  demo           tests/data/demo_queries.jsonl: plain-language queries -> stdlib module page (demo corpus)
  manpage        held-out manual pages: the page's one-line summary (taken out of the page) -> the page, among the
                 held-out pages and the longdoc documents: a known-item task over long technical documents where,
                 unlike longdoc, the query's words need not be in the document
Documents are truncated to --doc-tokens here to keep the card cheap on a CPU; the numbers say so.
Each set is scored in the three search modes: dense (the model), lexical (BM25 over the whole documents, the
same for every model) and hybrid (the two rankings fused with the index default, longretr.fusion.DEFAULT_RANKING).
`--minilm` adds the short-context reference people use today: all-MiniLM-L6-v2 over 256-piece chunks of the whole
documents, a document scored by its best chunk (the `minilm-chunked` baseline of `longretr eval`).

    python scripts/train_card.py --model default --model runs/pilot/adapter/model.toml --out runs/pilot/val-study.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from longretr.config import load_config
from longretr.democorpus import build as build_demo
from longretr.embedder import Embedder
from longretr.evaluate.baselines import BM25Scorer, ChunkedMiniLMScorer
from longretr.evaluate.data import RetrievalSet
from longretr.evaluate.metrics import known_item, rank
from longretr.fusion import DEFAULT_RANKING, fuse_ranked
from longretr.train.data import read_triplets


def metrics(ranked: list[list[tuple[int, float]]], relevant: list[int]) -> dict:
    scores = known_item([[i for i, _ in row] for row in ranked], relevant)
    return {**{k: v for k, v in scores.items() if k != "ranks"}, "queries": len(relevant)}


def ranked_lists(scores: np.ndarray, depth: int = 100) -> list[list[tuple[int, float]]]:
    run = rank(scores, list(range(scores.shape[1])), list(range(scores.shape[0])), depth)
    return [run[q] for q in range(scores.shape[0])]


def retrieval_set(queries: list[str], docs: list[str]) -> RetrievalSet:
    return RetrievalSet("card", "val", {str(i): d for i, d in enumerate(docs)},
                        {str(i): q for i, q in enumerate(queries)}, {})


def lexical_lists(queries: list[str], docs: list[str]) -> list[list[tuple[int, float]]]:
    return ranked_lists(BM25Scorer().score(retrieval_set(queries, docs), progress=False).scores)


def minilm_reference(sets: dict) -> dict:
    """Chunked all-MiniLM-L6-v2 on whole documents; queries without instructions, as that model was trained."""
    scorer = ChunkedMiniLMScorer(256)
    out = {}
    for name, (_, queries, docs, relevant) in sets.items():
        out[name] = metrics(ranked_lists(scorer.score(retrieval_set(queries, docs), progress=False).scores), relevant)
        print("minilm-chunked", name, round(out[name]["mrr@10"], 3), flush=True)
    scorer.close()
    return out


def query_sets(data: Path, demo_corpus: Path, limit: int, only: str = "") -> dict:
    """The sets by name; only is a comma list of those to keep (default: all)."""
    wanted = set(only.split(",")) if only else {"reasonaug-q2c", "longdoc", "demo", "manpage"}
    sets = {}
    rows = [t for t in read_triplets(data / "reasonaug-val.jsonl") if t.dataset == "reasonaug-q2c"][:limit]
    docs = sorted({t.positive for t in rows} | {n for t in rows for n in t.negatives})
    sets["reasonaug-q2c"] = (rows[0].instruction, [t.query for t in rows], docs, [docs.index(t.positive) for t in rows])
    rows = read_triplets(data / "longdoc-val.jsonl")[:limit]
    docs = sorted({t.positive for t in rows} | {n for t in rows for n in t.negatives})
    sets["longdoc"] = (rows[0].instruction, [t.query for t in rows], docs, [docs.index(t.positive) for t in rows])
    longdocs = docs
    if "demo" in wanted:  # the demo corpus is built from pydoc: only when asked for
        queries = [json.loads(line) for line in Path("tests/data/demo_queries.jsonl").read_text().splitlines()]
        if not demo_corpus.exists():
            build_demo(demo_corpus)
        names = sorted(p.name for p in demo_corpus.glob("*.txt"))
        docs = [(demo_corpus / n).read_text() for n in names]
        sets["demo"] = (None, [q["text"] for q in queries], docs, [names.index(q["relevant"]) for q in queries])
    if (data / "manpage-val.jsonl").exists():  # data/train built before the manual pages were added has none
        rows = read_triplets(data / "manpage-val.jsonl")[:limit]
        docs = sorted({t.positive for t in rows} | set(longdocs))
        sets["manpage"] = (rows[0].instruction, [t.query for t in rows], docs,
                           [docs.index(t.positive) for t in rows])
    return {k: v for k, v in sets.items() if k in wanted}


def evaluate(model: str, sets: dict, doc_tokens: int, lexical: dict) -> dict:
    cfg = load_config(model)
    emb = Embedder(cfg)
    out = {}
    for name, (instruction, queries, docs, relevant) in sets.items():
        start = time.perf_counter()
        d = emb.encode_documents(docs, progress=False, max_tokens=doc_tokens)
        # a set's own instruction (the one it was trained with) where it has one, else the model's
        emb.config = replace(emb.config, query_instruction=instruction or cfg.query_instruction)
        scores, fusion = d.dense_and_fusion_scores(emb.encode_queries(queries))
        dense = ranked_lists(scores)
        hybrid = [fuse_ranked(a, b, 100) for a, b in zip(ranked_lists(fusion), lexical[name])]
        out[name] = {"dense": metrics(dense, relevant), "lexical": metrics(lexical[name], relevant),
                     "hybrid": metrics(hybrid, relevant), "documents": len(docs),
                     "seconds": round(time.perf_counter() - start, 1)}
        print(model, name, {m: round(out[name][m]["mrr@10"], 3) for m in ("dense", "lexical", "hybrid")}, flush=True)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--data", type=Path, default=Path("data/train"))
    ap.add_argument("--demo-corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--doc-tokens", type=int, default=1024)
    ap.add_argument("--limit", type=int, default=150)
    ap.add_argument("--sets", default="", help="Comma list of reasonaug-q2c, longdoc, demo, manpage (default: all).")
    ap.add_argument("--minilm", action="store_true", help="Add the chunked all-MiniLM-L6-v2 reference.")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    unknown = set(filter(None, args.sets.split(","))) - {"reasonaug-q2c", "longdoc", "demo", "manpage"}
    if unknown:
        ap.error(f"--sets: unknown {', '.join(sorted(unknown))} (reasonaug-q2c, longdoc, demo, manpage)")
    missing = [f for f in ("reasonaug-val.jsonl", "longdoc-val.jsonl") if not (args.data / f).is_file()]
    if missing:  # before any model loads
        ap.error(f"--data {args.data}: no {' or '.join(missing)} (scripts/build_train_data.py writes them)")
    sets = query_sets(args.data, args.demo_corpus, args.limit, args.sets)
    lexical = {name: lexical_lists(queries, docs) for name, (_, queries, docs, _) in sets.items()}
    results = {"doc_tokens": args.doc_tokens, "ranking": DEFAULT_RANKING,
               "models": {m: evaluate(m, sets, args.doc_tokens, lexical) for m in args.model}}
    if args.minilm:
        results["minilm-chunked"] = minilm_reference(sets)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
