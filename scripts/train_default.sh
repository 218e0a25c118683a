#!/usr/bin/env bash
# Reproduce the shipped default adapter (longretr/weights/gemma3-270m-diffembed): training data, masked-diffusion
# adaptation, contrastive training, validation card. Each stage stops after max_minutes (110) and exits 75; running
# this script again continues where it stopped. Copy runs/default-2-contrastive/adapter over the shipped weights to
# use the result.
set -euo pipefail
BIN=${BIN:-.venv/bin}
[ -f data/train/raw-text.jsonl ] || "$BIN/python" scripts/build_train_data.py
for stage in default-1-diffusion default-2-contrastive; do
  rc=0
  "$BIN/longretr" train --config "configs/train/$stage.toml" --resume || rc=$?
  if [ "$rc" = 75 ]; then echo "$stage stopped at its time limit: run $0 again to continue"; exit 75; fi
  [ "$rc" = 0 ] || exit "$rc"
done
"$BIN/python" scripts/train_card.py --model gemma3-270m-bidir --model runs/default-2-contrastive/adapter/model.toml \
  --doc-tokens 8192 --out runs/default-2-contrastive/val.json
