"""Copy a trained run into longretr/weights/NAME/: the final adapter (bf16, as `longretr train` saves it), its
config and Gemma notice, and each stage's log, loss curve, settings and validation scores (val.json, if the stage has
`val` files) under training/, named after the stage's run folder (training/cpu-1-diffusion-log.jsonl, ...).

    python scripts/ship_adapter.py longretr/weights/gemma3-270m-diffembed-cpu \
        runs/cpu-1-diffusion runs/cpu-2-contrastive
The last run's adapter is shipped; its val-study.json (scripts/train_card.py, as scripts/train_default.sh runs it), if
any, goes in as training/val-study.json. The card is written by hand.
"""

import argparse
import shutil
from pathlib import Path


def ship(dest: Path, runs: list[Path]) -> None:
    if len({run.name for run in runs}) < len(runs):  # checked before anything is written
        raise ValueError(f"run folders need distinct names, their logs are named after them: {runs}")
    needed = [run / name for run in runs for name in ("log.jsonl", "loss.png", "train.json")]
    needed.append(runs[-1] / "adapter" / "adapter_model.safetensors")
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:  # also before anything is written: a half-shipped folder would look like an adapter
        raise ValueError(f"not a finished run: no {', '.join(missing)}")
    adapter = runs[-1] / "adapter"
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json", "GEMMA_NOTICE.txt"):  # longretr train saves bf16
        if (adapter / name).exists():
            shutil.copy(adapter / name, dest / name)
    training = dest / "training"
    training.mkdir(exist_ok=True)
    for run in runs:
        for name in ("log.jsonl", "loss.png", "train.json", "val.json"):
            if (run / name).exists():  # val.json: only a stage with val files has one
                shutil.copy(run / name, training / f"{run.name}-{name}")
    if (runs[-1] / "val-study.json").exists():
        shutil.copy(runs[-1] / "val-study.json", training / "val-study.json")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dest", type=Path)
    ap.add_argument("runs", type=Path, nargs="+", help="the stages' run folders, in order")
    args = ap.parse_args()
    try:
        ship(args.dest, args.runs)
    except ValueError as e:
        ap.error(str(e))
    print(f"wrote {args.dest}")
