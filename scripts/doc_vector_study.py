"""Ways to make one vector of a long document, scored side by side on train_card.py's query sets.

Mean-pooled document vectors share a large common direction (on the demo index the corpus mean has norm 0.91,
and longer documents sit closer to it), so a plain cosine ranks long documents by small residuals. Variants:

    plain    the whole document's vector, as `longretr index` made it before lead_tokens
    centred  (d - mean) / |d - mean| over the corpus being searched (query-free, like BM25's IDF)
    sum      the normalised sum of the whole document's vector and its lead's (its first 512 tokens', or --lead's);
             the same as plain for documents no longer than the lead (what lead_tokens did before 2026-12-01's third
             session)
    max      two vectors per long document, the whole one and the lead's; a document scores the higher of its two
             cosines (ModelConfig.lead_tokens, as `longretr index` and `longretr eval` do it; the default's is 256)

Dense and hybrid mode (index default fusion), documents cut to 512 tokens (--lead) and whole. On the long-document set,
whole documents, MRR@10 is also split by where the query (a title or a sentence) sits in its document: in the
opening 300 characters, elsewhere in the first 512 tokens, or beyond them, where the lead cannot help. And Acc@1
of plain / sum / max on LongEmbed's passkey and needle sets as `longretr eval` regenerates them (quick profile,
seed 0), where every candidate is the same filler with one needle.

    .venv/bin/python scripts/doc_vector_study.py --model gemma3-270m-diffembed-cpu2 \
        --demo-index indexes/demo-cmp-cpu2 --cache /tmp/doc-vectors --out results/doc-vectors.json [--lead 256]

--model is a config without lead_tokens (the variants are made here): `gemma3-270m-diffembed-cpu2` is the default
without them. The demo set's whole-document vectors are read from a demo index built with that model
(`compare_modes.py --model gemma3-270m-diffembed-cpu2` builds one); the rest are encoded here (about 40 minutes
on 2 CPU cores) and cached under --cache.
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
from longretr.embedder import Embedder  # noqa: E402
from longretr.evaluate.runner import Settings, build_sets  # noqa: E402
from longretr.fusion import fuse_ranked  # noqa: E402
from longretr.machine import describe  # noqa: E402

WHOLE = 32768


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


def summed(whole: np.ndarray, lead: np.ndarray) -> np.ndarray:
    """The sum variant: whole + lead, re-normalised."""
    return unit(whole + lead)


def reciprocal_ranks(ranked: list[list[tuple[int, float]]], relevant: list[int]) -> np.ndarray:
    """Each query's 1/rank of its relevant document within the top 10, else 0."""
    tops = [[i for i, _ in row[:10]] for row in ranked]
    return np.array([1 / (1 + top.index(r)) if r in top else 0.0 for top, r in zip(tops, relevant)])


def query_positions(emb: Embedder, queries: list[str], docs: list[str], relevant: list[int], lead: int) -> list[str]:
    """Where each query's text sits in its document (whitespace-normalised): opening (first 300 characters),
    lead (the rest of the first `lead` tokens), beyond, short (document of at most `lead` tokens) or absent."""
    out = []
    for q, r in zip(queries, relevant):
        doc = " ".join(docs[r].split())
        at = doc.find(" ".join(q.split()))
        if len(emb.tokenizer(doc)["input_ids"]) <= lead:
            out.append("short")
        elif at < 0:
            out.append("absent")
        elif at < 300:
            out.append("opening")
        else:
            out.append("lead" if len(emb.tokenizer(doc[:at])["input_ids"]) < lead else "beyond")
    return out


def synthetic(emb: Embedder, cfg, cache: Path, lead: int) -> dict:
    """Acc@1 (%) of plain, sum and max on the regenerated passkey and needle sets, per length."""
    sets, _ = build_sets(Settings())
    out = {}
    for s in sets:
        docs = list(s.corpus.values())
        D = {}
        for tokens in (WHOLE, lead):
            path = cache / f"{cfg.name}-{s.task}-{s.split}-{tokens}.npy"
            if not path.exists():
                emb.config = replace(cfg, lead_tokens=0)
                np.save(path, emb.encode_documents(docs, progress=False, max_tokens=tokens).vectors)
            D[tokens] = np.load(path)
        emb.config = cfg
        Q = emb.encode_queries(list(s.queries.values()))
        gold = np.array([s.doc_ids.index(next(iter(s.qrels[q]))) for q in s.queries])
        scores = {"plain": Q @ D[WHOLE].T, "sum": Q @ summed(D[WHOLE], D[lead]).T,
                  "max": np.maximum(Q @ D[WHOLE].T, Q @ D[lead].T)}
        out[f"{s.task}-{s.context_length}"] = row = {
            v: round(100 * float((S.argmax(1) == gold).mean()), 1) for v, S in scores.items()}
        print(f"{s.task:8s} {s.context_length:>6}  " + "  ".join(f"{v} {a:5.1f}" for v, a in row.items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--demo-index", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--lead", type=int, default=512, help="lead length in tokens (default %(default)s); the rows "
                    "of documents cut short are cut to it too")
    args = ap.parse_args()
    lead = args.lead
    cfg = load_config(args.model)
    sets = query_sets(Path("data/train"), args.corpus, 150, "reasonaug-q2c,longdoc,demo,manpage")
    lexical = {name: lexical_lists(queries, docs) for name, (_, queries, docs, _) in sets.items()}
    emb = Embedder(cfg)  # one model; its config is switched per use (max_tokens, instruction)
    args.cache.mkdir(parents=True, exist_ok=True)
    results = {"model": cfg.name, "lead_tokens": lead, "machine": describe(), "sets": {}}
    vectors: dict[tuple[str, int], np.ndarray] = {}
    plan = [("demo", lead), ("demo", WHOLE), ("reasonaug-q2c", lead), ("longdoc", lead), ("manpage", lead),
            ("longdoc", WHOLE), ("manpage", WHOLE)]
    for name, tokens in plan:
        instruction, queries, docs, relevant = sets[name]
        if (name, tokens) == ("demo", WHOLE):
            D, doc_tokens = demo_vectors(args.demo_index, sorted(p.name for p in args.corpus.glob("*.txt")))
            results["demo_cos_to_mean_by_length"] = fifths = cos_to_mean_by_length(D, doc_tokens)
            # what a lead costs to encode: the first `lead` tokens again, for every document longer than that
            results["demo_tokens"] = {"documents": int(doc_tokens.sum()),
                                      "leads": int(lead * (doc_tokens > lead).sum())}
            print("demo, cosine to the corpus mean by length fifth:",
                  ", ".join(f"{f['tokens'][0]}-{f['tokens'][1]} tokens {f['cos']:.3f}" for f in fifths))
        else:
            cache = args.cache / f"{cfg.name}-{name}-{tokens}.npy"
            if not cache.exists():
                emb.config = replace(cfg, lead_tokens=0)
                np.save(cache, emb.encode_documents(docs, progress=True, max_tokens=tokens).vectors)
            D = np.load(cache)
        vectors[name, tokens] = D
        emb.config = replace(cfg, query_instruction=instruction or cfg.query_instruction)
        Q = emb.encode_queries(queries)
        row = {"bm25": metrics(lexical[name], relevant)["mrr@10"], "mean_norm": float(np.linalg.norm(D.mean(0)))}
        variants = {"plain": Q @ D.T, "centred": Q @ unit(D - D.mean(0)).T}
        if tokens == WHOLE:
            variants["sum"] = Q @ summed(D, vectors[name, lead]).T
            variants["max"] = np.maximum(Q @ D.T, Q @ vectors[name, lead].T)
        for variant, S in variants.items():
            dense = ranked_lists(S)
            hybrid = [fuse_ranked(a, b, 100) for a, b in zip(dense, lexical[name])]
            row[variant] = {"dense": metrics(dense, relevant), "hybrid": metrics(hybrid, relevant)}
        if (name, tokens) == ("longdoc", WHOLE):
            where = np.array(query_positions(emb, queries, docs, relevant, lead))
            # "lead" here: in the first `lead` tokens, after the opening
            rr = {v: reciprocal_ranks(ranked_lists(variants[v]), relevant) for v in ("plain", "sum", "max")}
            row["dense_by_query_position"] = split = {
                p: {"queries": int((where == p).sum())}
                | {v: round(float(r[where == p].mean()), 3) for v, r in rr.items()}
                for p in ("opening", "lead", "beyond", "short", "absent")
                if (where == p).any()
            }
            print("longdoc whole, dense MRR@10 by query position:", split, flush=True)
        results["sets"][f"{name}-{tokens}"] = row
        print(f"{name:14s} {tokens:>6}  BM25 {row['bm25']:.3f}  |mean| {row['mean_norm']:.2f}  " + "  ".join(
            f"{v} dense {row[v]['dense']['mrr@10']:.3f} (top-3 {row[v]['dense']['top3']:.3f}) "
            f"hybrid {row[v]['hybrid']['mrr@10']:.3f}" for v in variants), flush=True)
    results["synthetic_acc1"] = synthetic(emb, cfg, args.cache, lead)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}; machine: {results['machine']['summary']}")


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
