"""How many long-document training pairs keep their query inside what training sees: of `--sample` rows drawn
(seed 1) from each file, those whose query (its words, any whitespace between) occurs in the first `--tokens`
tokens of the positive, by the given model's tokenizer. Compares longdoc-train.jsonl with its windowed copy.

    .venv/bin/python scripts/window_coverage.py --model default
"""

import argparse
import random
import re
from pathlib import Path

from longretr.embedder import Embedder
from longretr.train.data import read_triplets

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="default")
    ap.add_argument("--data", type=Path, default=Path("data/train"))
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--sample", type=int, default=600)
    args = ap.parse_args()
    missing = [f for f in ("longdoc-train.jsonl", "longdoc-train-windows.jsonl") if not (args.data / f).is_file()]
    if missing:  # before the model loads
        ap.error(f"--data {args.data}: no {' or '.join(missing)} (scripts/build_train_data.py writes them)")
    plain = read_triplets(args.data / "longdoc-train.jsonl")
    windows = read_triplets(args.data / "longdoc-train-windows.jsonl")
    tok = Embedder(args.model).tokenizer
    print(f"windowed rows: {sum(a.positive != b.positive for a, b in zip(plain, windows)):,} of {len(plain):,}")
    picks = random.Random(1).sample(range(len(plain)), args.sample)
    for name, rows in (("longdoc-train.jsonl", plain), ("longdoc-train-windows.jsonl", windows)):
        inside = sum(bool(re.search(r"\s+".join(map(re.escape, rows[i].query.split())),
                                    tok.decode(tok(rows[i].positive)["input_ids"][: args.tokens]))) for i in picks)
        print(f"{name}: query inside the first {args.tokens} tokens in {inside} of {args.sample} rows")
