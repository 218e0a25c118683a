"""Validation before/after a training run, for its card: each held-out triplet file is a small known-item task.

A query (with its instruction, as training sees it) ranks its positive among every distinct document of the file
(positives and negatives), by the cosine of whole-text vectors cut as training cuts them. The untrained model and
the run's adapter are scored the same way, so the card can say what the run bought. scripts/train_card.py is the
wider study (BM25, hybrid, MiniLM, the demo and manual-page sets); this is what every run gets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..embedder import Embedder
from ..evaluate.metrics import known_item
from .data import read_triplets


def validation_tasks(files: list[str], limit: int, instruction: str = "") -> dict[str, tuple[list[str], list[str],
                                                                                         list[int]]]:
    """Per file: the first `limit` queries (a row without an instruction gets `instruction`, as in training), the
    distinct documents of those rows (positives and negatives), and each query's positive's index."""
    tasks = {}
    for name in files:
        rows = read_triplets(Path(name), instruction)[:limit]
        docs = list(dict.fromkeys(d for t in rows for d in (t.positive, *t.negatives)))
        where = {d: i for i, d in enumerate(docs)}
        tasks[Path(name).stem] = ([t.query_text for t in rows], docs, [where[t.positive] for t in rows])
    return tasks


def score(model: str, tasks: dict, max_query_tokens: int, max_doc_tokens: int,
          progress: bool = False) -> dict[str, dict]:
    """MRR@10, top-1 and top-3 of one model config on each task; `progress` prints a line and a bar per task."""
    embedder = Embedder(model)
    out = {}
    for name, (queries, docs, relevant) in tasks.items():
        if progress:
            n, m = len(queries), len(docs)
            print(f"validation: {model} on {name} ({n} quer{'y' if n == 1 else 'ies'}, {m} document{'s' * (m != 1)})",
                  flush=True)
        q = embedder.encode_texts(queries, max_tokens=max_query_tokens, progress=False)
        d = embedder.encode_texts(docs, max_tokens=max_doc_tokens, progress=progress)
        ranked = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :10].tolist()
        scores = known_item(ranked, relevant)
        out[name] = {k: round(v, 4) for k, v in scores.items() if k != "ranks"} | {"queries": len(queries),
                                                                                  "documents": len(docs)}
    return out


def card_lines(before: dict, after: dict, doc_tokens: int, before_model: str = "") -> list[str]:
    """A markdown table of the two models' scores, one row per task; `before_model` says what "before" is."""
    what = f" Before: {before_model}; after: this run's adapter." if before_model else ""
    lines = ["", "Validation (each query ranks its positive among the rows' positives and negatives, cut to "
                 f"{doc_tokens} tokens; MRR@10 / top-1).{what}", "", "| set | queries | documents | before | after |",
             "|---|---|---|---|---|"]
    for name, b in before.items():
        a = after[name]
        lines.append(f"| {name} | {b['queries']} | {b['documents']} | {b['mrr@10']:.3f} / {b['top1']:.3f} | "
                     f"{a['mrr@10']:.3f} / {a['top1']:.3f} |")
    return lines
