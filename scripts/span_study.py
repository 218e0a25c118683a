"""Span vectors (ModelConfig.span_tokens) against the whole document's vector and the lead, whole documents, on
train_card.py's sets of long documents.

With span_tokens = S, a document longer than S tokens also gets one vector per S-token span: the mean of that span's
final-layer states from the same whole-document forward pass, so every span's states attended to the whole
document and nothing is encoded twice ("late chunking"). Here each document is encoded once, by the model with
span_tokens = 128 and no normalisation; an S-token span (S a multiple of 128) is the token-weighted mean of the
128-token spans in it (ModelConfig.spans_for cuts both the same way), so one pass scores every S. Variants, each
document scoring the best cosine of its vectors:

    plain          the whole document's vector
    lead           + its first 256 tokens' vector, encoded alone (lead_tokens = 256, the default until 2026-12-02)
    spansS         + its S-token spans' vectors
    lead+spansS    + both

Dense and hybrid (BM25 fused as `longretr search` does) MRR@10 and top-3; on the long-document set also dense
MRR@10 split by where the query (a title or a sentence) sits in its document (doc_vector_study.query_positions).
On that set it also counts how often the passage `longretr search` shows for a query's own document (its lead or
span closest to the query) holds the query's text (passages256).

    .venv/bin/python scripts/span_study.py --model gemma3-270m-diffembed-cpu2 --cache /tmp/spans \
        --out results/spans.json [--sets longdoc,manpage,demo]

--model is a config without lead or span vectors (the variants are made here). On a 2-core AMD EPYC (fp32) the
encoding took 1,249 s for the long-document set and 3,929 s for the demo corpus, each with another job beside it
for part of the time; the manual-page set holds the long documents too (559k tokens). The vectors are cached under
--cache.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from doc_vector_study import query_positions, reciprocal_ranks, unit  # noqa: E402
from train_card import lexical_lists, metrics, query_sets, ranked_lists  # noqa: E402

from longretr.config import load_config  # noqa: E402
from longretr.embedder import Embedder, best_scores  # noqa: E402
from longretr.fusion import fuse_ranked  # noqa: E402
from longretr.machine import describe  # noqa: E402

WHOLE, LEAD, UNIT = 32768, 256, 128


def encode(emb: Embedder, cfg, docs: list[str], path: Path) -> dict:
    """Whole-document means, 128-token span means (unnormalised) and their owners, leads; cached at path."""
    if not path.exists():
        emb.config = replace(cfg, lead_tokens=0, span_tokens=UNIT, normalize=False)
        enc = emb.encode_documents(docs, progress=True, max_tokens=WHOLE)
        rows = sorted(enc.extra)
        emb.config = replace(cfg, lead_tokens=0, span_tokens=0)
        leads = emb.encode_documents(docs, progress=False, max_tokens=LEAD).vectors
        np.savez(path, whole=enc.vectors, n_tokens=np.array(enc.n_tokens), leads=leads,
                 owners=np.array([r for r in rows for _ in enc.extra[r]], dtype="int64"),
                 spans=np.concatenate([enc.extra[r] for r in rows]) if rows else np.zeros((0, enc.vectors.shape[1])))
        print(f"encoded {len(docs)} documents, {sum(enc.n_tokens):,} tokens, in {enc.seconds:.0f} s", flush=True)
    z = np.load(path)
    return {k: z[k] for k in z.files}


def span_vectors(cfg, enc: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(owners, unit vectors) of every document's size-token spans, from its 128-token span means."""
    unit_cfg, cfg = replace(cfg, span_tokens=UNIT, max_tokens=WHOLE), replace(cfg, span_tokens=size, max_tokens=WHOLE)
    owners, vectors = [], []
    for row, n in enumerate(enc["n_tokens"].tolist()):
        units = unit_cfg.spans_for(n)
        means = enc["spans"][enc["owners"] == row]
        for start, end in cfg.spans_for(n):
            inside = [i for i, (a, _) in enumerate(units) if start <= a < end]
            weights = np.array([units[i][1] - units[i][0] for i in inside], dtype="float32")
            assert weights.sum() == end - start, (row, start, end)  # the 128-token spans tile the span exactly
            owners.append(row)
            vectors.append(weights @ means[inside] / weights.sum())
    return np.array(owners, dtype="int64"), unit(np.array(vectors))


def passages(emb: Embedder, cfg, Q: np.ndarray, enc: dict, docs: list[str], queries: list[str],
             relevant: list[int], size: int) -> dict:
    """How often the passage `longretr search` shows for a query's own document (its lead or size-token span whose
    vector is closest to the query) holds the query's text, where that text sits in a document with other vectors."""
    owners, vectors = span_vectors(cfg, enc, size)
    before, emb.config = emb.config, replace(cfg, lead_tokens=LEAD, span_tokens=size, max_tokens=WHOLE)
    ranges_of = emb.passages(docs)  # each document's lead, then its spans, as `longretr index` stores them
    emb.config = before
    holds = overlaps = found = 0
    chance = []
    for n, (q, r) in enumerate(zip(queries, relevant)):
        m = re.search(r"\s+".join(map(re.escape, q.split())), docs[r])
        tokens = int(enc["n_tokens"][r])
        if m is None or tokens <= LEAD:
            continue
        found += 1
        ranges = ranges_of[r]
        j = int(np.argmax(np.concatenate([unit(enc["leads"][r:r + 1]), vectors[owners == r]]) @ Q[n]))
        inside = [(a <= m.start() and m.end() <= b) for a, b in ranges.tolist()]
        chance.append(np.mean(inside))
        holds += inside[j]
        overlaps += bool(ranges[j][0] < m.end() and m.start() < ranges[j][1])
    return {"queries": found, "holds": holds, "overlaps": overlaps,
            "random_passage_holds": round(float(np.sum(chance)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m-diffembed-cpu2")
    ap.add_argument("--corpus", type=Path, default=Path("corpus"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--sets", default="longdoc,manpage")
    ap.add_argument("--spans", default="256,512,1024", help="span lengths, multiples of 128")
    args = ap.parse_args()
    cfg = load_config(args.model)
    if cfg.lead_tokens or cfg.span_tokens:
        sys.exit(f"--model {cfg.name}: use a config without lead_tokens or span_tokens; the variants are made here")
    sizes = [int(s) for s in args.spans.split(",")]
    sets = query_sets(Path("data/train"), args.corpus, 150, args.sets)
    emb = Embedder(cfg)
    args.cache.mkdir(parents=True, exist_ok=True)
    results = {"model": cfg.name, "lead_tokens": LEAD, "machine": describe(), "sets": {}}
    for name, (instruction, queries, docs, relevant) in sets.items():
        enc = encode(emb, cfg, docs, args.cache / f"{cfg.name}-{name}.npz")
        emb.config = replace(cfg, query_instruction=instruction or cfg.query_instruction)
        Q = emb.encode_queries(queries)
        n_tokens = enc["n_tokens"]
        plain = Q @ unit(enc["whole"]).T
        longer = np.flatnonzero(n_tokens > LEAD)  # as lead_for: a document no longer than the lead has none
        variants = {"plain": plain, "lead": best_scores(plain, Q, longer, enc["leads"][longer])}
        counts = {}
        for size in sizes:
            owners, vectors = span_vectors(cfg, enc, size)
            counts[size] = len(owners)
            variants[f"spans{size}"] = best_scores(plain, Q, owners, vectors)
            variants[f"lead+spans{size}"] = best_scores(variants["lead"], Q, owners, vectors)
        lexical = lexical_lists(queries, docs)
        row = {"documents": len(docs), "tokens": int(n_tokens.sum()), "span_vectors": counts,
               "bm25": metrics(lexical, relevant)}
        where = np.array(query_positions(emb, queries, docs, relevant, LEAD)) if name == "longdoc" else None
        for variant, S in variants.items():
            dense = ranked_lists(S)
            hybrid = [fuse_ranked(a, b, 100) for a, b in zip(dense, lexical)]
            row[variant] = {"dense": metrics(dense, relevant), "hybrid": metrics(hybrid, relevant)}
            line = (f"{name:8s} {variant:16s} dense {row[variant]['dense']['mrr@10']:.3f} "
                    f"(top-3 {row[variant]['dense']['top3']:.3f})  hybrid {row[variant]['hybrid']['mrr@10']:.3f}")
            if where is not None:
                rr = reciprocal_ranks(dense, relevant)
                row[variant]["dense_by_query_position"] = split = {
                    p: {"queries": int((where == p).sum()), "mrr@10": round(float(rr[where == p].mean()), 3)}
                    for p in ("opening", "lead", "beyond", "short", "absent") if (where == p).any()}
                line += "  " + " ".join(f"{p} {v['mrr@10']:.3f}" for p, v in split.items())
            print(line, flush=True)
        if name == "longdoc":
            row["passages256"] = p = passages(emb, cfg, Q, enc, docs, queries, relevant, 256)
            print(f"{name}: of {p['queries']} queries whose text sits in a document with other vectors, the passage "
                  f"shown for that document holds the text for {p['holds']} and overlaps it for {p['overlaps']} (a "
                  f"passage picked at random: {p['random_passage_holds']})", flush=True)
        print(f"{name}: {len(docs)} documents, {row['tokens']:,} tokens, BM25 {row['bm25']['mrr@10']:.3f}, "
              f"span vectors {counts}", flush=True)
        results["sets"][name] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}; machine: {results['machine']['summary']}")


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
