"""Ways to make one vector of a long document, scored side by side on train_card.py's query sets.

Mean-pooled document vectors share a large common direction (on the demo index the corpus mean has norm 0.91,
and longer documents sit closer to it), so a plain cosine ranks long documents by small residuals. Variants:

    plain    the whole document's vector, as `longretr index` made it before lead_tokens
    centred  (d - mean) / |d - mean| over the corpus being searched (query-free, like BM25's IDF)
    lead     the normalised sum of the whole document's vector and its first 512 tokens' vector
             (ModelConfig.lead_tokens = 512); the same as plain for documents of at most 512 tokens

Dense and hybrid mode (index default fusion), documents cut to 512 tokens and whole.

    .venv/bin/python scripts/doc_vector_study.py --model default --demo-index indexes/demo-cmp-cpu2 \
        --cache /tmp/doc-vectors --out results/doc-vectors.json

The demo set's whole-document vectors are read from a demo index built with the same model and without
lead_tokens (compare_modes.py builds one); the rest are encoded here (about 40 minutes on 2 CPU cores) and cached
under --cache.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from train_card import lexical_lists, metrics, query_sets, ranked_lists  # noqa: E402

from longretr import store  # noqa: E402
from longretr.config import load_config  # noqa: E402
from longretr.embedder import Embedder, add_lead  # noqa: E402
from longretr.fusion import fuse_ranked  # noqa: E402
from longretr.machine import describe  # noqa: E402

WHOLE, LEAD = 32768, 512
PLAN = [("demo", LEAD), ("demo", WHOLE), ("reasonaug-q2c", LEAD), ("longdoc", LEAD), ("manpage", LEAD),
        ("longdoc", WHOLE), ("manpage", WHOLE)]


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def demo_vectors(index: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The index's vectors and token counts, in the order of names."""
    snap = store.load(index)
    rows = {i: (v, n) for i, v, n in zip(*(snap.docs.column(c).to_pylist() for c in ("id", "vid", "n_tokens")))}
    return (store.vectors_for(snap.index, np.array([rows[n][0] for n in names])), np.array([rows[n][1] for n in names]))


def cos_to_mean_by_length(D: np.ndarray, tokens: np.ndarray) -> list[dict]:
    """Mean cosine of each fifth of the documents (shortest first) to the corpus mean."""
    mean = D.mean(0) / np.linalg.norm(D.mean(0))
    return [{"tokens": [int(tokens[f].min()), int(tokens[f].max())], "cos": float((D[f] @ mean).mean())}
            for f in np.array_split(np.argsort(tokens), 5)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--demo-index", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cfg = load_config(args.model)
    sets = query_sets(Path("data/train"), args.corpus, 150, "reasonaug-q2c,longdoc,demo,manpage")
    lexical = {name: lexical_lists(queries, docs) for name, (_, queries, docs, _) in sets.items()}
    emb = Embedder(cfg)  # one model; its config is switched per use (max_tokens, instruction)
    args.cache.mkdir(parents=True, exist_ok=True)
    results = {"model": cfg.name, "machine": describe(), "sets": {}}
    vectors: dict[tuple[str, int], np.ndarray] = {}
    for name, tokens in PLAN:
        instruction, queries, docs, relevant = sets[name]
        if (name, tokens) == ("demo", WHOLE):
            D, doc_tokens = demo_vectors(args.demo_index, sorted(p.name for p in args.corpus.glob("*.txt")))
            results["demo_cos_to_mean_by_length"] = fifths = cos_to_mean_by_length(D, doc_tokens)
            print("demo, cosine to the corpus mean by length fifth:",
                  ", ".join(f"{f['tokens'][0]}-{f['tokens'][1]} tokens {f['cos']:.3f}" for f in fifths))
        else:
            cache = args.cache / f"{cfg.name}-{name}-{tokens}.npy"
            if not cache.exists():
                emb.config = replace(cfg, max_tokens=tokens, lead_tokens=0)
                np.save(cache, emb.encode_documents(docs, progress=True).vectors)
            D = np.load(cache)
        vectors[name, tokens] = D
        emb.config = replace(cfg, query_instruction=instruction or cfg.query_instruction)
        Q = emb.encode_queries(queries)
        row = {"bm25": metrics(lexical[name], relevant)["mrr@10"], "mean_norm": float(np.linalg.norm(D.mean(0)))}
        variants = {"plain": D, "centred": unit(D - D.mean(0))}
        if tokens == WHOLE:
            variants["lead"] = add_lead(D, vectors[name, LEAD], cfg.normalize)
        for variant, V in variants.items():
            dense = ranked_lists(Q @ V.T)
            hybrid = [fuse_ranked(a, b, 100) for a, b in zip(dense, lexical[name])]
            row[variant] = {"dense": metrics(dense, relevant), "hybrid": metrics(hybrid, relevant)}
        results["sets"][f"{name}-{tokens}"] = row
        print(f"{name:14s} {tokens:>6}  BM25 {row['bm25']:.3f}  |mean| {row['mean_norm']:.2f}  " + "  ".join(
            f"{v} dense {row[v]['dense']['mrr@10']:.3f} (top-3 {row[v]['dense']['top3']:.3f}) "
            f"hybrid {row[v]['hybrid']['mrr@10']:.3f}" for v in variants), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}; machine: {results['machine']['summary']}")


if __name__ == "__main__":
    main()
