"""Build training data into data/train/: ReasonAug triplets (from ../shared/data/reasonaug), long-document
pairs + raw text from the Debian packages linux-doc-6.1 and debian-reference-en, plain-language pairs from the
manual pages of manpages, manpages-dev and perl-doc, Debian's package descriptions (when apt has its English
descriptions), and *-mined.jsonl copies with BM25-mined hard negatives. With --dense-mine MODEL, also
*-train-dmined.jsonl copies whose first negative is the page or concept that MODEL ranks highest (documents cut to
--max-doc-tokens, as training cuts them)."""

import argparse
from pathlib import Path

from longretr.train.data import build_all, dense_ranker

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("data/train"))
    ap.add_argument("--reasonaug", type=Path, default=Path("../shared/data/reasonaug"))
    ap.add_argument("--dense-mine", metavar="MODEL", help="a model config name or .toml path, e.g. default")
    ap.add_argument("--max-doc-tokens", type=int, default=512)
    args = ap.parse_args()
    dense = None
    if args.dense_mine:
        from longretr.embedder import Embedder  # loads torch; the plain build does not need it

        dense = dense_ranker(Embedder(args.dense_mine), args.max_doc_tokens)
    for name, count in build_all(args.out, args.reasonaug, dense=dense).items():
        print(f"{args.out / name}: {count} rows")
