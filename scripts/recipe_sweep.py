"""Recipe sweep: several variants of one training config, each trained and then scored by the training card.

Made for a borrowed GPU: trying a CPU recipe's variants there says which CPU run is worth its hours before the
CPU spends them. Each variant is the base config with some keys changed, trained into OUT/NAME, then scored
with `scripts/train_card.py` (with --baseline models beside it). A summary JSON is rewritten after every variant,
so a run cut short keeps what it finished.

    python scripts/recipe_sweep.py --base configs/train/cpu-2f-long.toml --out runs/sweep \\
        --variant A --variant lr2e-4:lr=2e-4 --variant long:steps=900 --baseline default --budget-minutes 8

A variant is NAME or NAME:key=value,key=value (TOML values: 2e-4, 900, true, "text").
"""
from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import tomllib
import torch

from longretr.machine import describe
from longretr.train.trainer import TrainConfig, Trainer


def parse_variant(spec: str) -> tuple[str, dict]:
    name, _, pairs = spec.partition(":")
    if not name:
        raise ValueError(f"variant {spec!r}: needs a name before ':'")
    overrides = tomllib.loads("\n".join(pairs.split(","))) if pairs else {}
    unknown = set(overrides) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"variant {spec!r}: unknown keys {sorted(unknown)}")
    return name, overrides


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="Training config the variants change.")
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--baseline", action="append", default=[], help="Model configs scored beside the first variant.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--doc-tokens", type=int, default=512)
    ap.add_argument("--data", type=Path, default=Path("data/train"), help="train_card.py's --data: validation sets.")
    ap.add_argument("--sets", default="", help="train_card.py's --sets (default: all four).")
    ap.add_argument("--limit", type=int, default=150, help="train_card.py's --limit: queries per set.")
    ap.add_argument("--variant-minutes", type=float, default=0.0, help="max_minutes for each variant (0: config's).")
    ap.add_argument("--budget-minutes", type=float, default=0.0, help="Start no variant after this much time.")
    ap.add_argument("--summary", type=Path, default=None, help="Where the summary goes (default OUT/sweep.json).")
    args = ap.parse_args(argv)
    try:  # all parsed and checked before any training starts
        base = TrainConfig.from_toml(args.base)
        variants = [parse_variant(v) for v in args.variant]
        for _, overrides in variants:
            replace(base, **overrides)  # a value TrainConfig refuses (steps=0, objective=x)
    except (ValueError, TypeError) as e:  # TOMLDecodeError is a ValueError
        ap.error(str(e))
    summary_path = args.summary or args.out / "sweep.json"
    summary = {"base": str(args.base), "machine": describe(), "doc_tokens": args.doc_tokens, "variants": {}}
    start = time.perf_counter()
    for i, (name, overrides) in enumerate(variants):
        if args.budget_minutes and time.perf_counter() - start > args.budget_minutes * 60:
            print(f"sweep: budget spent, {name} and later not run", flush=True)
            break
        if args.variant_minutes:
            overrides = {"max_minutes": args.variant_minutes, **overrides}
        cfg = replace(base, output=str(args.out / name), **overrides)
        trainer = Trainer(cfg)
        result = trainer.train(progress=False)
        del trainer
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        card = args.out / name / f"val-{args.doc_tokens}.json"
        models = [str(args.out / name / "adapter" / "model.toml")] + (args.baseline if i == 0 else [])
        cmd = [sys.executable, str(Path(__file__).with_name("train_card.py")), "--doc-tokens", str(args.doc_tokens),
               "--limit", str(args.limit), "--data", str(args.data), "--out", str(card)]
        cmd += ["--sets", args.sets] if args.sets else []
        cmd += [a for m in models for a in ("--model", m)]
        subprocess.run(cmd, check=True)
        summary["variants"][name] = {"overrides": overrides, "train": result, "card": json.loads(card.read_text())}
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2))
        print(f"sweep: {name} done ({result['steps']} steps, {result['seconds']:.0f}s); wrote {summary_path}",
              flush=True)


if __name__ == "__main__":
    main()
