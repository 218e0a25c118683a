"""PEFT/LoRA adapters attached to any backbone by path and merged into its weights.

Adapters are often trained on the original model class of a checkpoint: on Dream's `DreamModel` (tensor names
`model.layers.N...`, as DiffEmbed's are), on LLaDA's `model.transformer.blocks.N.attn_out`, or on a `...ForCausalLM`.
The backbone here is the bare native encoder, so adapter tensor names go through the family's renaming, and every
adapter tensor must land on a module: PEFT on its own would leave mismatched ones at their no-op initialisation.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from .families import CheckpointError, Family

# Adapters saved on a ...ForCausalLM / DreamModel carry the encoder under "model."; the backbone here is the encoder.
ENCODER_PREFIX = {r"^model\.(?=(layers|embed_tokens|norm)\.)": ""}
PEFT_PREFIX = "base_model.model."


def merge_adapter(model: torch.nn.Module, adapters: Sequence[str | Path], family: Family,
                  weights: Sequence[float] = ()) -> torch.nn.Module:
    """The backbone with the adapters' weights merged in; a clear error if any adapter tensor has no home.

    Several adapters (of the same modules) are merged as their average, a "model soup" (Wortsman et al. 2022): the
    mean of their weight deltas, exactly, as one LoRA of their summed rank (`soup`); or, with `weights`, as the
    weighted sum of their deltas."""
    from peft import PeftModel
    from peft.utils import set_peft_model_state_dict

    paths = [Path(a) for a in adapters]
    loaded = [_load(path, model, family) for path in paths]
    config, state = loaded[0] if len(loaded) == 1 and not weights else soup(loaded, paths, weights)
    config.inference_mode = True
    with warnings.catch_warnings():  # peft asks transformers a deprecated question; not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = PeftModel(model, config)
    result = set_peft_model_state_dict(peft_model, state)
    unexpected = sorted(result.unexpected_keys)
    missing = sorted(k for k in result.missing_keys if ".lora_" in k)
    if unexpected or missing:
        detail = (f"{len(unexpected)} adapter tensors match no module (e.g. {unexpected[0]})" if unexpected
                  else f"{len(missing)} LoRA tensors absent from the adapter (e.g. {missing[0]})")
        raise CheckpointError(f"{', '.join(map(str, paths))}: adapter does not fit this {family.name} backbone: "
                              f"{detail}")
    return peft_model.merge_and_unload()


def soup(loaded: list[tuple], paths: list[Path], mix: Sequence[float] = ()) -> tuple:
    """(config, weights) of one LoRA whose delta is the mean of the given adapters' deltas: with dW_i = s_i B_i A_i
    (s_i = alpha_i / r_i), mean_i dW_i = [B_1 s_1 / n, B_2 s_2 / n, ...] [A_1; A_2; ...], a LoRA of rank sum_i r_i
    and scaling 1; with `mix`, sum_i mix_i dW_i. Stored in the adapters' own dtype (bf16 for the shipped ones; their
    halving is exact, other weights round B to bf16)."""
    mix = list(mix) or [1 / len(paths)] * len(paths)
    configs, weights = [c for c, _ in loaded], [w for _, w in loaded]
    for path, w in zip(paths[1:], weights[1:]):
        if set(w) != set(weights[0]):
            raise CheckpointError(f"{path}: adapts other modules than {paths[0]}; adapters averaged together must "
                                  "adapt the same ones")
    for path, config, w in zip(paths, configs, weights):
        if getattr(config, "rank_pattern", None) or getattr(config, "alpha_pattern", None):
            raise CheckpointError(f"{path}: an adapter with per-module ranks cannot be averaged with others")
        other = next((k for k in w if ".lora_A." not in k and ".lora_B." not in k), None)
        if other:
            raise CheckpointError(f"{path}: holds {other}, not only LoRA A and B matrices; it cannot be averaged")
    out: dict[str, torch.Tensor] = {}
    for key in (k for k in weights[0] if ".lora_A." in k):
        b_key = key.replace(".lora_A.", ".lora_B.")
        dtype = weights[0][key].dtype
        out[key] = torch.cat([w[key] for w in weights], dim=0)
        out[b_key] = torch.cat([w[b_key].float() * (c.lora_alpha / c.r * m)
                                for c, w, m in zip(configs, weights, mix)], dim=1).to(dtype)
    config = copy.deepcopy(configs[0])
    config.r = config.lora_alpha = sum(c.r for c in configs)
    config.use_rslora = False
    return config, out


def _load(path: Path, model: torch.nn.Module, family: Family) -> tuple:
    """One adapter folder's PEFT config and weights, renamed onto this backbone's modules and checked against them."""
    from peft import PeftConfig
    from peft.utils import load_peft_weights

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
    return config, weights
