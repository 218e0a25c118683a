"""Smaller span vectors for queries about one detail of a long page: span sizes, and several sizes at once.

The default's span vectors are means over 256-token spans of the whole-document pass (README, Search modes). A query
about one function among dozens in a large page has to be matched by the one span holding it, and a 256-token span of
a pydoc page holds several functions. This pools spans of other sizes from one more whole-document pass over the
index's documents (the same truncation, so the same states up to bf16 noise: the script prints how close the pass's
whole-document vectors are to the index's) and scores, per query file:

    256 (index)      the index as built: whole, lead and 256-token span vectors (dense mode's best cosine)
    S                whole and lead vectors with S-token spans instead of the index's (pooled from each
                     document's first max_tokens: a longer document's windows are left out here)
    256+S            the index's vectors and the S-token spans beside them

in dense mode (a document's best cosine) and in hybrid mode (its fusion score, `fusion.fusion_scores`, fused with
the index's BM25 by the default convex w=0.5 over the top 100 of each, as `longretr search --mode hybrid` does).
The pooled spans are cached under --cache. Evaluation queries are used, so this measures; it chooses nothing.

    .venv/bin/python scripts/span_size_study.py --index indexes/demo-cmp --sizes 64,128 --cache /tmp/span-size \\
        --queries tests/data/demo_queries_fresh3.jsonl --out results/span-size-demo.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from compare_modes import read_known_items  # noqa: E402
from vector_headroom import doc_scores, index_vectors  # noqa: E402

from longretr.embedder import Embedder  # noqa: E402
from longretr.evaluate.metrics import known_item  # noqa: E402
from longretr.fusion import DEFAULT_RANKING, fuse_ranked, fusion_scores  # noqa: E402
from longretr.machine import describe  # noqa: E402
from longretr.search import HYBRID_DEPTH, manifest_model  # noqa: E402
from longretr.store import load  # noqa: E402


def pool_spans(emb: Embedder, ids: list[list[int]], sizes: list[int]) -> tuple[np.ndarray, dict, float]:
    """One whole-document pass per document, pooling every size's spans: whole vectors [N, dim], {size: (vectors,
    owner)}, seconds."""
    per_size = [[dataclasses.replace(emb.config, span_tokens=s).spans_for(len(doc)) for s in sizes] for doc in ids]
    t0 = time.perf_counter()
    whole, _, pooled = emb._encode_ids(ids, progress=True, spans=[sum(doc, []) for doc in per_size])
    seconds = time.perf_counter() - t0
    out = {}
    for k, s in enumerate(sizes):  # a document's pooled rows: every size's spans, in the order of `sizes`
        vecs, owner = [], []
        for row, doc in enumerate(per_size):
            if doc[k]:
                before = sum(map(len, doc[:k]))
                vecs.append(pooled[row][before:before + len(doc[k])])
                owner += [row] * len(doc[k])
        out[s] = (np.concatenate(vecs), np.array(owner))
    return whole, out, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", nargs="+", type=Path, required=True)
    ap.add_argument("--sizes", default="64,128", help="comma list of span sizes in tokens")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    docs, vecs, owner, kinds = index_vectors(args.index)
    snap = load(args.index, ann=False)
    config = manifest_model(args.index, snap.manifest)
    sizes = [int(s) for s in args.sizes.split(",")]
    emb = Embedder(config)
    texts = dict(zip(snap.docs.column("id").to_pylist(), snap.docs.column("text").to_pylist()))
    ids, _ = emb.tokenize([texts[d] for d in docs])  # docs: index_vectors' column order
    n = len(docs)

    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.cache / f"{config.fingerprint()}-{Path(args.index).name}-{'-'.join(map(str, sizes))}.npz"
    if not path.exists():
        whole, spans, seconds = pool_spans(emb, ids, sizes)
        np.savez(path, whole=whole, seconds=seconds, **{f"v{s}": spans[s][0] for s in sizes},
                 **{f"o{s}": spans[s][1] for s in sizes})
    got = np.load(path)
    kind = np.array(kinds)
    index_whole = vecs[torch.tensor(kind == "whole")]
    whole_owner = owner[torch.tensor(kind == "whole")]
    agree = float((torch.tensor(got["whole"])[whole_owner] * index_whole).sum(1).min())

    per_file = [read_known_items(p) for p in args.queries]
    queries = [q for file in per_file for q in file]
    bounds = np.cumsum([0, *map(len, per_file)]).tolist()
    col = {d: i for i, d in enumerate(docs)}
    gold = [col[q["relevant"]] for q in queries]
    q = torch.tensor(emb.encode_queries([x["text"] for x in queries]))
    vid_col = {v: col[d] for v, d in zip(snap.docs.column("vid").to_pylist(), snap.docs.column("id").to_pylist())}
    lexical = [[(vid_col[v], s) for v, s in row] for row in snap.lexical.search([x["text"] for x in queries],
                                                                                  HYBRID_DEPTH)]
    keep = torch.tensor(kind != "span")  # whole and lead vectors: the document score fusion adds
    doc = doc_scores(q, vecs[keep], owner[keep], n)

    def scored(span_sets: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        best = doc_scores(q, torch.cat([vecs[keep], *[v for v, _ in span_sets]]),
                          torch.cat([owner[keep], *[o for _, o in span_sets]]), n)
        fused_dense = torch.tensor(fusion_scores(best.numpy(), doc.numpy()))
        hybrid = []
        for row, lex in zip(fused_dense, lexical):
            top = row.topk(HYBRID_DEPTH)
            dense = [(int(i), float(s)) for s, i in zip(top.values, top.indices)]
            hybrid.append([c for c, _ in fuse_ranked(dense, lex, 10, DEFAULT_RANKING)])
        dense_top = best.topk(10, dim=1).indices.tolist()
        out = {}
        for mode, ranked in (("dense", dense_top), ("hybrid", hybrid)):
            out[mode] = known_item(ranked, gold, 10)["mrr@10"]
            out[f"{mode}_per_file"] = [known_item(ranked[a:b], gold[a:b], 10)["mrr@10"]
                                       for a, b in zip(bounds, bounds[1:])]
        return out

    span = torch.tensor(kind == "span")
    index_spans = (vecs[span], owner[span])
    variants = {"256 (index)": scored([index_spans])}
    for s in sizes:
        extra = (torch.tensor(got[f"v{s}"]), torch.tensor(got[f"o{s}"]))
        variants[str(s)] = {**scored([extra]), "vectors": len(extra[0])}
        variants[f"256+{s}"] = scored([index_spans, extra])
    result = {"index": args.index, "model": config.name, "queries": len(queries),
              "query_files": [str(p) for p in args.queries], "index_span_vectors": int(span.sum()),
              "encode_seconds": float(got["seconds"]), "min_cosine_pass_vs_index_whole": agree,
              "variants": variants, "machine": describe()}
    print(f"{args.index} ({config.name}), {len(queries)} queries; pass took {float(got['seconds']):.0f} s; its whole "
          f"vectors vs the index's: min cosine {agree:.4f}")
    names = " / ".join(p.stem for p in args.queries)
    for name, r in variants.items():
        for mode in ("dense", "hybrid"):
            per = " / ".join(f"{x:.3f}" for x in r[f"{mode}_per_file"])
            print(f"  spans {name:>12} {mode:>6}: {r[mode]:.4f}  ({per})")
    print(f"  (by file: {names})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} ({result['machine']['summary']})")


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
