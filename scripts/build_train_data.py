"""Build training data into data/train/: ReasonAug triplets (from ../shared/data/reasonaug), long-document
pairs + raw text from the Debian packages linux-doc-6.1 and debian-reference-en, plain-language pairs from the
manual pages of manpages, manpages-dev and perl-doc, Debian's package descriptions (when apt has its English
descriptions), and *-mined.jsonl copies with BM25-mined hard negatives. With --dense-mine MODEL, also
*-train-dmined.jsonl copies whose first negative is the page or concept that MODEL ranks highest (documents cut to
--max-doc-tokens, as training cuts them); with --max-ratio R as well, *-train-dminedNN.jsonl (NN = 100 R), whose
negatives score at most R x the positive's cosine (positive-aware mining)."""

import argparse
import sys
from pathlib import Path

from longretr.train.data import build_all, dense_ranker, read_triplets


def report_dense_negatives(out: Path, tag: str) -> None:
    """Per *-train-{tag}.jsonl: how many first negatives differ from the plain file's and match BM25's."""
    for dmined in sorted(out.glob(f"*-train-{tag}.jsonl")):
        name = dmined.name.removesuffix(f"-{tag}.jsonl")
        dense, plain, bm25 = (read_triplets(out / f) for f in (dmined.name, f"{name}.jsonl", f"{name}-mined.jsonl"))
        changed = sum(d.negatives[0] != p.negatives[0] for d, p in zip(dense, plain))
        same = sum(d.negatives[0] == b.negatives[0] for d, b in zip(dense, bm25))
        print(f"{dmined}: first negative differs from the plain file's in {changed:,} of {len(dense):,} rows, "
              f"is BM25's in {same:,}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("data/train"))
    ap.add_argument("--reasonaug", type=Path, default=Path("../shared/data/reasonaug"))
    ap.add_argument("--dense-mine", metavar="MODEL", help="a model config name or .toml path, e.g. default")
    ap.add_argument("--max-doc-tokens", type=int, default=512)
    ap.add_argument("--max-ratio", type=float, help="with --dense-mine: skip negatives above R x the positive's cosine")
    args = ap.parse_args()
    if args.max_ratio is not None and not (args.dense_mine and 0 < args.max_ratio < 1):
        ap.error("--max-ratio needs --dense-mine and a value between 0 and 1, e.g. 0.95")
    if args.max_doc_tokens < 1:
        ap.error(f"--max-doc-tokens must be at least 1, got {args.max_doc_tokens}")
    missing = [f for f in ("pairs.jsonl", "definitions.jsonl") if not (args.reasonaug / f).is_file()]
    if missing:  # before a model loads or the manual pages render, not after
        ap.error(f"--reasonaug {args.reasonaug}: no {' or '.join(missing)} (a copy of ReasonAug)")
    if args.out.exists() and not args.out.is_dir():
        ap.error(f"--out {args.out}: not a folder")
    dense, tag = None, "dmined" if args.max_ratio is None else f"dmined{round(args.max_ratio * 100)}"
    try:  # a missing model config or Debian package: its message, not a traceback
        if args.dense_mine:
            from longretr.embedder import Embedder  # loads torch; the plain build does not need it

            dense = dense_ranker(Embedder(args.dense_mine), args.max_doc_tokens, max_ratio=args.max_ratio)
        counts = build_all(args.out, args.reasonaug, dense=dense, dense_tag=tag)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"build_train_data.py: error: {e}")
    for name, count in counts.items():
        print(f"{args.out / name}: {count} rows")
    if dense is not None:
        report_dense_negatives(args.out, tag)
