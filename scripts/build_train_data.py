"""Build training data into data/train/: ReasonAug triplets (from ../shared/data/reasonaug), long-document
pairs + raw text from the Debian packages linux-doc-6.1 and debian-reference-en, plain-language pairs from the
manual pages of manpages, manpages-dev and perl-doc, Debian's package descriptions (when apt has its English
descriptions), and *-mined.jsonl copies with BM25-mined hard negatives."""

import argparse
from pathlib import Path

from longretr.train.data import build_all

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("data/train"))
    ap.add_argument("--reasonaug", type=Path, default=Path("../shared/data/reasonaug"))
    args = ap.parse_args()
    for name, count in build_all(args.out, args.reasonaug).items():
        print(f"{args.out / name}: {count} rows")
