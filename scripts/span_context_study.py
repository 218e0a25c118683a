"""How much context should a span vector see? Whole-document spans against spans encoded in windows or alone.

A built index's span vectors are late-chunked: each is the mean of its span's final-layer states from the one
whole-document pass, so every span attended to the whole document (up to 32k tokens). On the PostgreSQL pages,
span vectors win most of dense mode's first places, right and wrong ones (scripts/vector_headroom.py). A span that
attended to 30k tokens of its page may carry the page's topic more than its own text, which would blur exactly the
near misses dense mode makes there (the right page behind another page on the same topic). This re-encodes the
same spans (the index model's ModelConfig.spans_for boundaries) with less context and scores dense mode with them
in place of the index's:

    whole      the index's own span vectors (every span saw the whole document)
    windowN    the document cut into windows of N tokens (N a multiple of span_tokens, aligned with the spans);
               each span pooled from its window's pass (late chunking inside the window)
    alone      each span encoded alone, as a chunk (window = the span)

Each variant is scored with the index's whole-document and lead vectors beside the spans (as dense mode scores),
with the spans alone, and beside all of the index's vectors (its own spans too: both kinds of span). A window not
at the document's start gets the document's first token (<bos>) in front, as every text the model sees has; it is
left out of the span's mean. Only each document's first max_tokens is re-encoded, so the spans of a longer
document's windows (README, "Longer than one pass"; five demo pages, no PostgreSQL page) are in `whole` and not in
the other variants. It writes --out (JSON) and a PNG beside it (MRR@10 against the context); vectors
are cached under --cache.

    .venv/bin/python scripts/span_context_study.py --index indexes/pgdocs --cache /tmp/span-context \\
        --queries tests/data/pgdocs_queries.jsonl tests/data/pgdocs_queries_fresh.jsonl \\
        tests/data/pgdocs_queries_fresh2.jsonl --windows 0,512,2048 --out results/span-context-pgdocs.json

--windows: 0 is "alone". The model is the index's (its manifest). Evaluation queries are used, so this measures;
it chooses nothing by itself.
"""

from __future__ import annotations

import argparse
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
from vector_headroom import doc_scores, index_vectors, mrr10  # noqa: E402

from longretr.embedder import Embedder  # noqa: E402
from longretr.machine import describe  # noqa: E402
from longretr.search import manifest_model  # noqa: E402
from longretr.store import load  # noqa: E402


def windows_of(spans: list[tuple[int, int]], window: int, size: int) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Group a document's spans into windows of `window` tokens (0: one span per window): (start, end, spans)."""
    per = max(1, window // size)
    groups = [spans[i: i + per] for i in range(0, len(spans), per)]
    return [(g[0][0], g[-1][1], g) for g in groups]


def encode_spans(emb: Embedder, ids: list[list[int]], window: int) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Every document's span vectors pooled from passes over windows of `window` tokens: vectors, owner (document
    row), seconds, tokens encoded."""
    size = emb.config.span_tokens
    pieces, ranges, owners = [], [], []
    for row, doc in enumerate(ids):
        for start, end, spans in windows_of(emb.config.spans_for(len(doc)), window, size):
            head = doc[:1] if start > 0 else []  # <bos>, outside every span's mean
            pieces.append(head + doc[start:end])
            ranges.append([(s - start + len(head), e - start + len(head)) for s, e in spans])
            owners.append([row] * len(spans))
    t0 = time.perf_counter()
    _, _, pooled = emb._encode_ids(pieces, progress=True, spans=ranges)
    seconds = time.perf_counter() - t0
    # _encode_ids returns a window's span means in its row of `pooled` (rows of one span too: ranges never empty).
    vecs = np.concatenate([pooled[i] for i in range(len(pieces))])
    return vecs, np.concatenate([np.array(o) for o in owners]), seconds, sum(len(p) for p in pieces)


def plot(result: dict, path: Path) -> None:
    """Dense MRR@10 against the context each span vector saw (the variants in the order run: whole first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = sorted(result["variants"], key=lambda v: (v == "whole", int(v[6:]) if v.startswith("window") else 0))
    labels = [{"alone": "the span alone", "whole": "whole document"}.get(v, f"{v[6:]}-token window") for v in order]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for key, name in (("with_whole_and_lead", "spans + whole and lead vectors (dense mode)"),
                      ("spans_only", "spans only")):
        ax.plot(labels, [result["variants"][v][key] for v in order], marker="o", label=name)
    ax.axhline(result["whole_and_lead_only"], color="grey", linestyle=":", label="whole and lead vectors, no spans")
    ax.set_xlabel(f"context of each {result['span_tokens']}-token span vector")
    ax.set_ylabel("dense MRR@10")
    ax.set_title(f"{Path(result['index']).name}: {result['queries']} known-item queries, {result['model']}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True)
    ap.add_argument("--queries", nargs="+", type=Path, required=True)
    ap.add_argument("--windows", default="0,2048", help="comma list of window lengths in tokens; 0 = each span alone")
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    docs, vecs, owner, kinds = index_vectors(args.index)
    snap = load(args.index, lexical=False, ann=False)
    config = manifest_model(args.index, snap.manifest)
    if not config.span_tokens:
        sys.exit(f"{args.index}: its model ({config.name}) has no span vectors (span_tokens = 0)")
    windows = [int(w) for w in args.windows.split(",")]
    if any(w % config.span_tokens for w in windows):
        sys.exit(f"--windows {args.windows}: each must be 0 or a multiple of span_tokens ({config.span_tokens})")
    emb = Embedder(config)
    texts = dict(zip(snap.docs.column("id").to_pylist(), snap.docs.column("text").to_pylist()))
    ids, _ = emb.tokenize([texts[d] for d in docs])  # docs: index_vectors' column order

    col = {d: i for i, d in enumerate(docs)}
    per_file = [read_known_items(path) for path in args.queries]
    queries = [q for file in per_file for q in file]
    bounds = np.cumsum([0, *map(len, per_file)]).tolist()
    q = torch.tensor(emb.encode_queries([x["text"] for x in queries]))
    gold = torch.tensor([col[x["relevant"]] for x in queries])
    span = torch.tensor([k == "span" for k in kinds])
    keep = ~span  # whole and lead vectors
    n = len(docs)

    def both_scores(span_vecs: torch.Tensor, span_owner: torch.Tensor) -> dict:
        dense = doc_scores(q, torch.cat([vecs[keep], span_vecs]), torch.cat([owner[keep], span_owner]), n)
        return {"with_whole_and_lead": mrr10(dense, gold),
                "with_whole_and_lead_per_file": [mrr10(dense[a:b], gold[a:b]) for a, b in zip(bounds, bounds[1:])],
                "spans_only": mrr10(doc_scores(q, span_vecs, span_owner, n), gold),
                "with_all_index_vectors": mrr10(doc_scores(q, torch.cat([vecs, span_vecs]),
                                                           torch.cat([owner, span_owner]), n), gold)}

    result = {"index": args.index, "model": config.name, "span_tokens": config.span_tokens,
              "queries": len(queries), "query_files": [str(p) for p in args.queries],
              "whole_and_lead_only": mrr10(doc_scores(q, vecs[keep], owner[keep], n), gold),
              "variants": {"whole": both_scores(vecs[span], owner[span])}, "machine": describe()}
    args.cache.mkdir(parents=True, exist_ok=True)
    for window in windows:
        name = f"window{window}" if window else "alone"
        path = args.cache / f"{config.fingerprint()}-{Path(args.index).name}-{name}.npz"
        if not path.exists():
            v, o, seconds, tokens = encode_spans(emb, ids, window)
            np.savez(path, vecs=v, owner=o, seconds=seconds, tokens=tokens)
        got = np.load(path)
        if len(got["vecs"]) != int(span.sum()):
            sys.exit(f"{path}: {len(got['vecs'])} span vectors, the index has {int(span.sum())}; delete the cache")
        result["variants"][name] = {**both_scores(torch.tensor(got["vecs"]), torch.tensor(got["owner"])),
                                    "encode_seconds": float(got["seconds"]), "tokens": int(got["tokens"])}
    print(f"dense MRR@10 over {len(queries)} queries ({args.index}, {config.name}); whole and lead vectors only: "
          f"{result['whole_and_lead_only']:.4f}")
    for name, r in result["variants"].items():
        cost = f"  ({r['tokens']:,} tokens in {r['encode_seconds']:.0f} s)" if "tokens" in r else ""
        per = " / ".join(f"{x:.3f}" for x in r["with_whole_and_lead_per_file"])
        print(f"  spans {name:>8}: with whole and lead {r['with_whole_and_lead']:.4f} ({per} by query file), "
              f"spans only {r['spans_only']:.4f}, beside all index vectors {r['with_all_index_vectors']:.4f}{cost}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')} ({result['machine']['summary']})")


if __name__ == "__main__":
    from longretr.scripting import run

    run(main)
