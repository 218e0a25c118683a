"""PEFT/LoRA adapters attached to any backbone by path and merged into its weights.

Adapters are often trained on the original model class of a checkpoint: on Dream's `DreamModel` (tensor names
`model.layers.N...`, as DiffEmbed's are), on LLaDA's `model.transformer.blocks.N.attn_out`, or on a `...ForCausalLM`.
The backbone here is the bare native encoder, so adapter tensor names go through the family's renaming, and every
adapter tensor must land on a module: PEFT on its own would leave mismatched ones at their no-op initialisation.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from .families import CheckpointError, Family

# Adapters saved on a ...ForCausalLM / DreamModel carry the encoder under "model."; the backbone here is the encoder.
ENCODER_PREFIX = {r"^model\.(?=(layers|embed_tokens|norm)\.)": ""}
PEFT_PREFIX = "base_model.model."


def merge_adapter(model: torch.nn.Module, adapter: str | Path, family: Family) -> torch.nn.Module:
    """The backbone with the adapter's weights merged in; a clear error if any adapter tensor has no home."""
    from peft import PeftConfig, PeftModel
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise CheckpointError(f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    config = PeftConfig.from_pretrained(str(path))
    modules = {name for name, _ in model.named_modules()}
    renames = dict(family.key_mapping)
    if not any(m.startswith("model.") for m in modules):
        renames.update(ENCODER_PREFIX)
    weights = load_peft_weights(str(path), device="cpu", key_mapping=renames)
    adapted = sorted({k[len(PEFT_PREFIX):].split(".lora_")[0] for k in weights
                      if k.startswith(PEFT_PREFIX) and ".lora_" in k})
    unknown = [m for m in adapted if m not in modules]
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} adapted modules do not exist in this {family.name} backbone "
                              f"(e.g. {', '.join(unknown[:3])}); was the adapter trained on another model?")
    if adapted and getattr(config, "target_modules", None) is not None:
        # Exact module paths after renaming: original names (attn_out, blocks.N) would match nothing here.
        config.target_modules = set(adapted)
        config.layers_to_transform = None
        config.layers_pattern = None
        patterns = [*(getattr(config, "rank_pattern", None) or {}), *(getattr(config, "alpha_pattern", None) or {})]
        for pattern in patterns:
            if not any(m.endswith(pattern) or re.search(pattern, m) for m in adapted):
                raise CheckpointError(f"{path}: rank/alpha pattern {pattern!r} names no module of this "
                                      f"{family.name} backbone after renaming")
    config.inference_mode = True
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = PeftModel(model, config)
    result = set_peft_model_state_dict(peft_model, weights)
    unexpected = sorted(result.unexpected_keys)
    missing = sorted(k for k in result.missing_keys if ".lora_" in k)
    if unexpected or missing:
        detail = (f"{len(unexpected)} adapter tensors match no module (e.g. {unexpected[0]})" if unexpected
                  else f"{len(missing)} LoRA tensors absent from the adapter (e.g. {missing[0]})")
        raise CheckpointError(f"{path}: adapter does not fit this {family.name} backbone: {detail}")
    return peft_model.merge_and_unload()
