"""Peak memory of the engine's own work at scale: `longretr index` over many small files and over one very large
text file, and reading a large JSONL, each in a child process whose peak RSS the OS reports (wait4).

The model's forward pass is stubbed (deterministic random unit vectors from each sequence's first tokens) on the
tests' tiny Gemma 3 model, so reading, tokenizing (counts, encoding, passages), tables, BM25, FAISS and the commit
are real and encoding takes no time: what is measured is what the engine holds, not the model's activations.

    python scripts/bench_memory.py                       # 20,000 files, a 60 MB text, a 200 MB JSONL
    python scripts/bench_memory.py --docs 2000 --text-mb 6 --jsonl-mb 20   # a quick look (0 skips a case)

Writes results/bench-memory/<time>/results.json and prints a table with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from tiny_models import WORDS, make_gemma3, write_config  # noqa: E402

from longretr.machine import describe  # noqa: E402

# The children: the CLI as installed (for a command that encodes nothing), and with Embedder._encode_ids stubbed (see
# the docstring).
REAL_CLI = """
import sys
from longretr.cli import app
sys.argv = ["longretr", *sys.argv[1:]]
app()
"""
STUBBED_CLI = """
import zlib
import numpy as np
from longretr import embedder

def encode_ids(self, ids, progress, spans=None):
    out = np.empty((len(ids), self.dim), dtype=np.float32)
    for n, x in enumerate(ids):
        rng = np.random.default_rng(zlib.crc32(np.asarray(x[:64], dtype=np.int64).tobytes()))
        v = rng.standard_normal(self.dim).astype(np.float32)
        out[n] = v / np.linalg.norm(v)
    if not isinstance(progress, bool):
        progress.update(sum(len(x) for x in ids))
    return out, 0.0, {}

embedder.Embedder._encode_ids = encode_ids
""" + REAL_CLI
READ_ONLY = """
import sys
from longretr.corpus import read_corpus
print(sum(1 for _ in read_corpus(sys.argv[1])))
"""


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def small_files(root: Path, n: int) -> int:
    """Files of about 1 KB and 380 tokens: the tiny tokenizer splits the made-up words into letters, so a file has
    about as many tokens as a real one of 1.5 KB has with Gemma 3's."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in range(n):
        folder = root / f"d{i % 100:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        text = " ".join(rng.choice(WORDS) if rng.random() < 0.7 else
                        "".join(rng.choice(letters) for _ in range(rng.randint(4, 8))) for _ in range(150))
        (folder / f"doc{i:06d}.txt").write_text(f"# Doc {i}\n\n{text}\n")
    return sum(p.stat().st_size for p in root.rglob("*.txt"))


def one_text(root: Path, megabytes: float) -> int:
    rng, path = random.Random(1), root / "huge.txt"
    root.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        while f.tell() < megabytes * 1e6:
            f.write(words(rng, 12) + "\n")
    return path.stat().st_size


def jsonl(root: Path, megabytes: float) -> int:
    rng, path = random.Random(2), root / "rows.jsonl"
    root.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        n = 0
        while f.tell() < megabytes * 1e6:
            f.write(json.dumps({"id": f"r{n}", "text": words(rng, 150)}) + "\n")
            n += 1
    return path.stat().st_size


def peak(args: list[str], env: dict) -> tuple[float, float, int]:
    """(seconds, peak RSS in MiB, exit status) of a child process."""
    start = time.perf_counter()
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, child.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20000, help="Small files (about 1 KB each) to index.")
    parser.add_argument("--text-mb", type=float, default=60, help="Size of the one large text file to index.")
    parser.add_argument("--jsonl-mb", type=float, default=200, help="Size of the JSONL file to read.")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "bench-memory")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_gemma3(tmp / "model", ["full_attention"] * 2)
        config = write_config(tmp, model, name="tiny-stubbed", max_tokens=512)
        env = {**os.environ, "LONGRETR_HOME": str(tmp / "home"), "HF_HUB_OFFLINE": "1"}
        python = [sys.executable, "-c"]
        rows = []
        cases = [("index: small files", small_files, args.docs, "index"),
                 ("index: one large text file", one_text, args.text_mb, "index"),
                 ("read a JSONL file", jsonl, args.jsonl_mb, "read")]
        def record(label: str, size: float, data_bytes: int, cmd: list[str]) -> None:
            seconds, rss, status = peak(cmd, env)
            rows.append({"case": label, "size": size, "data_mb": round(data_bytes / 2**20, 1),
                         "seconds": round(seconds, 1), "peak_rss_mb": round(rss), "exit": status})
            print(f"{label:<28} {data_bytes / 2**20:8.1f} MiB of data  {seconds:7.1f} s  peak RSS {rss:8.0f} MiB"
                  f"{'' if status == 0 else f'  (exit {status})'}", flush=True)

        for label, build, size, kind in [c for c in cases if c[2] > 0]:  # a size of 0 skips a case
            corpus, index = tmp / f"corpus-{len(rows)}", tmp / f"ix-{len(rows)}"
            data_bytes = build(corpus, size)
            if kind == "read":
                record(label, size, data_bytes, python + [READ_ONLY, str(corpus)])
                continue
            record(label, size, data_bytes, python + [STUBBED_CLI, "index", str(corpus), "--index", str(index),
                                                      "--model", str(config)])
            if build is small_files:  # a commit that encodes nothing: the real CLI (rm loads no model)
                record("rm: one of the small files", size, data_bytes,
                       python + [REAL_CLI, "rm", "d00/doc000000.txt", "--index", str(index)])
    machine = describe()
    print(f"machine: {machine['summary']}")
    out = args.out / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"machine": machine, "rows": rows, "settings": vars(args)},
                                                 indent=2, default=str) + "\n")
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
