"""What a CPU-hour of training buys: the default backbone trained for the same wall-clock budget under each choice
the training issue names (LoRA rank, top 6 vs all layers, document length, MiniLM distillation) and more (the
diffusion stage, BM25-mined hard negatives), then scored the same way. `scripts/bench_train.py` measures only the
cost (tokens/s); this measures quality for equal time.

    .venv/bin/python scripts/bench_train_quality.py --minutes 10      # needs data/train (scripts/build_train_data.py)
    .venv/bin/python scripts/bench_train_quality.py --minutes 45 --case "r16, all layers, docs 256"

Every case starts from the untrained bidirectional backbone (configs/gemma3-270m-bidir.toml) with the contrastive
recipe (InfoNCE x50, in-batch + one hard negative, lr 1e-4, batch 8, 10 warm-up steps) and stops after --minutes of
training. The linear decay is stretched over 10^5 steps so the lr is the same in every case however many steps it
reaches. Each adapter (and the untrained backbone) is scored by scripts/train_card.py's sets with documents cut to
--doc-tokens: held-out ReasonAug concepts, held-out kernel/Debian documents, the demo queries and held-out manual
pages (`--sets` picks some).
Writes results/bench_train_quality/<time>/results.json and quality.png (MRR@10 per case and set).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from bench_train import TRAIN_DATA, require_data  # noqa: E402
from train_card import evaluate, lexical_lists, query_sets  # noqa: E402

from longretr.machine import describe, load_average  # noqa: E402
from longretr.train.trainer import TrainConfig, Trainer  # noqa: E402

MINED = [p.replace("-train", "-train-mined") for p in TRAIN_DATA]
BASE = dict(model="gemma3-270m-bidir", objective="contrastive", steps=100_000, warmup=10, batch_size=8,
            max_query_tokens=64, max_doc_tokens=256, gradient_checkpointing=False, save_every=10**6)
# name -> changes to BASE. 1024-token documents need checkpointing on this 24 GiB machine (make bench-train).
CASES = {
    "r16, all layers, docs 256": {},
    # three times the paper's learning rate: fewer steps to spend in a CPU-hour, so does a bigger one buy more?
    "r16, all layers, docs 256, lr 3e-4": {"lr": 3e-4},
    "r16, top 6 layers, docs 256": {"lora_layers": list(range(12, 18))},
    "r4, all layers, docs 256": {"lora_r": 4, "lora_alpha": 8},
    "r16, all layers, docs 256, +MiniLM distillation": {"distill_weight": 1.0},
    "r16, all layers, docs 1024": {"max_doc_tokens": 1024, "gradient_checkpointing": True},
    # the diffusion-stage ablation: the same contrastive minutes after the CPU default's 15-minute masked-diffusion
    # stage (longretr train --config configs/train/cpu-1-diffusion.toml makes this adapter)
    "r16, all layers, docs 256, after diffusion": {"init_adapter": "runs/cpu-1-diffusion/adapter"},
    # the same triplets, each with the negative BM25 ranks highest from another document or concept instead of a
    # random one (longretr.train.data.mine_negatives; scripts/build_train_data.py writes the *-mined files)
    "r16, all layers, docs 256, BM25-mined negatives": {"data": MINED},
    # and with plain-language pairs from Debian's manual pages ("sort an array" -> qsort(3)) added
    "r16, all layers, docs 256, BM25-mined negatives + man pages": {"data": [*MINED,
                                                                            "data/train/manpage-train-mined.jsonl"]},
}


def slug(name: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "-", name).strip("-")


def train_case(name: str, changes: dict, minutes: float, data: list[str], out: Path) -> dict:
    cfg = TrainConfig(**{**BASE, "data": data, **changes, "output": str(out / slug(name)), "max_minutes": minutes})
    result = Trainer(cfg).train(progress=False)
    log = [json.loads(line) for line in (Path(cfg.output) / "log.jsonl").read_text().splitlines()]
    tail = log[-10:]
    ckpt = Path(cfg.output) / "checkpoint"
    return {"changes": changes, "steps": result["steps"], "train_minutes": round(result["seconds"] / 60, 1),
            "tokens": sum(r["tokens"] for r in log),
            "tokens_per_second": round(sum(r["tokens"] for r in log) / sum(r["seconds"] for r in log)),
            "loss_last10": round(sum(r["loss"] for r in tail) / len(tail), 3),
            "checkpoint_mb": round(sum(f.stat().st_size for f in ckpt.iterdir()) / 2**20, 1),
            "model": str(Path(cfg.output) / "adapter" / "model.toml")}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = list(results["untrained"]["scores"])
    names = ["untrained"] + list(results["cases"])
    rows = [results["untrained"]] + list(results["cases"].values())
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(names)
    for i, (name, row) in enumerate(zip(names, rows)):
        ax.bar([s + i * width for s in range(len(sets))], [row["scores"][s]["dense"]["mrr@10"] for s in sets],
               width, label=name)
    ax.set_xticks([s + 0.4 - width / 2 for s in range(len(sets))], sets)
    ax.set_ylabel("dense MRR@10")
    ax.set_title(f"{results['minutes']} min of CPU training per case ({results['machine']['summary']})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="Training time per case.")
    ap.add_argument("--doc-tokens", type=int, default=512, help="Document length when scoring.")
    ap.add_argument("--limit", type=int, default=150, help="Queries per validation set.")
    ap.add_argument("--case", action="append", choices=list(CASES), help="Run only this case (repeatable).")
    ap.add_argument("--sets", default="", help="Comma list of train_card.py's sets to score (default: all).")
    ap.add_argument("--data", nargs="+", default=TRAIN_DATA)
    ap.add_argument("--out", type=Path, default=Path("results/bench_train_quality") / time.strftime("%Y%m%d-%H%M%S"))
    args = ap.parse_args()
    asked = {n: c for n, c in CASES.items() if not args.case or n in args.case}
    require_data(list(dict.fromkeys(args.data + [d for c in asked.values() for d in c.get("data", [])])))
    missing = {n: c["init_adapter"] for n, c in asked.items()
               if c.get("init_adapter") and not Path(c["init_adapter"], "adapter_model.safetensors").exists()}
    for name, stage in missing.items():  # fatal only when asked for by name; a full run goes on without it
        message = f"case {name!r} needs {stage}: run `longretr train --config configs/train/cpu-1-diffusion.toml`"
        if args.case and name in args.case:
            sys.exit(message)
        print(f"skipped: {message}", flush=True)
    machine = describe()
    print(f"machine: {machine['summary']}; load average {load_average()}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sets = query_sets(Path("data/train"), Path("corpus"), args.limit, args.sets)
    lexical = {name: lexical_lists(queries, docs) for name, (_, queries, docs, _) in sets.items()}
    results = {"machine": machine, "load_average_start": load_average(), "minutes": args.minutes,
               "doc_tokens": args.doc_tokens, "base": BASE, "cases": {}}

    def save() -> None:
        (args.out / "results.json").write_text(json.dumps(results, indent=2))

    results["untrained"] = {"scores": evaluate(BASE["model"], sets, args.doc_tokens, lexical)}
    save()
    for name, changes in asked.items():
        if name in missing:
            continue
        print(f"== {name}: training {args.minutes} min", flush=True)
        row = train_case(name, changes, args.minutes, args.data, args.out / "runs")
        row["scores"] = evaluate(row["model"], sets, args.doc_tokens, lexical)
        results["cases"][name] = row
        print(name, {k: v for k, v in row.items() if k not in ("scores", "changes")}, flush=True)
        save()
    results["load_average_end"] = load_average()
    save()
    plot(results, args.out / "quality.png")
    print(f"\n{'case':<50} {'steps':>5} {'tok/s':>6} {'ckpt MB':>7}  " + "  ".join(f"{s:>13}" for s in sets))
    for name, row in [("untrained", {"steps": 0, "tokens_per_second": 0, "checkpoint_mb": 0, **results["untrained"]})] \
            + list(results["cases"].items()):
        print(f"{name:<50} {row['steps']:>5} {row['tokens_per_second']:>6} {row['checkpoint_mb']:>7}  "
              + "  ".join(f"{row['scores'][s]['dense']['mrr@10']:>13.3f}" for s in sets))
    print(f"load average at the end {results['load_average_end']}; wrote {args.out}")


if __name__ == "__main__":
    main()
