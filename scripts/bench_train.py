"""Training throughput of the default backbone on this machine: contrastive steps per LoRA placement and document
length, so a CPU run can be planned (what each CPU-hour buys in tokens). Quality per token is not measured here.

    .venv/bin/python scripts/bench_train.py            # needs data/train (scripts/build_train_data.py)

Each case runs a few real training steps on data/train (reasonaug + longdoc), skips the first (warm-up) and
reports tokens/s forward+backward, with the page faults and kernel time of the whole run; writes
results/bench_train/bench_train.json.

    make bench-train-thp      # = scripts/bench_train.py --thp both --only "all layers, docs 512" --steps 3

(`--thp both`) runs each selected case twice, in fresh processes, with torch's transparent-huge-page allocation
off and on (THP_MEM_ALLOC_ENABLE; torch reads it once per process). It cut page faults 9x but not kernel time or
step time (README, Training throughput), so longretr leaves it off.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from longretr.machine import describe, load_average  # noqa: E402
from longretr.train.trainer import TrainConfig, Trainer  # noqa: E402

TRAIN_DATA = ["data/train/reasonaug-train.jsonl", "data/train/longdoc-train.jsonl"]


def require_data(paths: list[str]) -> None:
    missing = [d for d in paths if not Path(d).exists()]
    if missing:
        raise SystemExit(f"missing training data {missing}: run scripts/build_train_data.py first")


# (name, LoRA layers, max document tokens, gradient checkpointing). At 1024 tokens the batch needs checkpointing:
# without it the all-layers case was killed for memory on this 24 GiB machine.
CASES = [
    ("all layers, docs 256", [], 256, False),
    ("top 6 layers, docs 256", list(range(12, 18)), 256, False),
    ("all layers, docs 512", [], 512, False),  # the cpu-4..6 stages (configs/train/cpu-*.toml)
    ("all layers, docs 1024, ckpt", [], 1024, True),
    ("top 6 layers, docs 1024, ckpt", list(range(12, 18)), 1024, True),
]


def run_case(layers: list[int], doc_tokens: int, ckpt: bool, steps: int, batch: int, data: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model="gemma3-270m-bidir", data=data, output=str(Path(tmp) / "run"), steps=steps,
                          batch_size=batch, warmup=1, max_query_tokens=64, max_doc_tokens=doc_tokens,
                          lora_layers=layers, gradient_checkpointing=ckpt, save_every=10**6)
        before = resource.getrusage(resource.RUSAGE_SELF)
        Trainer(cfg).train(progress=False)
        after = resource.getrusage(resource.RUSAGE_SELF)
        log = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()][1:]
    tokens, seconds = sum(r["tokens"] for r in log), sum(r["seconds"] for r in log)
    return {"tokens_per_second": round(tokens / seconds), "seconds_per_step": round(seconds / len(log), 1),
            "tokens_per_step": round(tokens / len(log)), "timed_steps": len(log),
            # whole run, warm-up step and model load included: where the time went besides arithmetic
            "minor_page_faults": after.ru_minflt - before.ru_minflt,
            "user_seconds": round(after.ru_utime - before.ru_utime, 1),
            "kernel_seconds": round(after.ru_stime - before.ru_stime, 1),
            "thp_mem_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "")}


def run_case_thp(name: str, args: argparse.Namespace) -> dict:
    """The case in two fresh processes, THP allocation off then on."""
    out = {}
    for label, value in (("thp off", "0"), ("thp on", "1")):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, "--only", name, "--steps", str(args.steps), "--batch", str(args.batch),
                   "--data", *args.data, "--out", tmp]
            env = {**os.environ, "THP_MEM_ALLOC_ENABLE": value}
            subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
            out[label] = json.loads((Path(tmp) / "bench_train.json").read_text())["cases"][name]
    out["speedup"] = round(out["thp on"]["tokens_per_second"] / out["thp off"]["tokens_per_second"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="Steps per case (the first is not timed).")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--data", nargs="+", default=TRAIN_DATA)
    ap.add_argument("--only", default="", help="Run only the cases whose name contains this text.")
    ap.add_argument("--thp", choices=("as-set", "both"), default="as-set",
                    help="both: each case with THP allocation off and on, side by side (fresh processes).")
    ap.add_argument("--out", type=Path, default=Path("results/bench_train"))
    args = ap.parse_args()
    if args.steps < 2:
        ap.error(f"--steps must be at least 2 (the first is not timed), got {args.steps}")
    if args.batch < 1:
        ap.error(f"--batch must be at least 1, got {args.batch}")
    if not any(args.only in name for name, *_ in CASES):
        ap.error(f"--only {args.only!r}: no case's name contains it ({'; '.join(name for name, *_ in CASES)})")
    require_data(args.data)
    machine = describe()
    print(f"machine: {machine['summary']}; load average {load_average()}", flush=True)
    results = {"machine": machine, "load_average_start": load_average(), "batch": args.batch, "cases": {}}
    for name, layers, doc_tokens, ckpt in CASES:
        if args.only and args.only not in name:
            continue
        if args.thp == "both":
            results["cases"][name] = run_case_thp(name, args)
        else:
            results["cases"][name] = run_case(layers, doc_tokens, ckpt, args.steps, args.batch, args.data)
        print(f"{name:<26} {results['cases'][name]}", flush=True)
    results["load_average_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_train.json").write_text(json.dumps(results, indent=2))
    print(f"load average at the end {results['load_average_end']}; wrote {args.out}/bench_train.json")


if __name__ == "__main__":
    main()
