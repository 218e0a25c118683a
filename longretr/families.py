"""Checkpoint families: how each supported backbone's original on-disk format maps onto transformers' own modules.

A family reads a checkpoint's original `config.json` (as a dict), builds the equivalent native transformers config with
the attention the longretr config asks for, and says how the original tensor names map onto the native modules. A hub id
and a local folder take the same path, no custom code runs, and the long-context attention applies to all of them.

- native: any model type transformers knows (Gemma 3, Qwen2/2.5, Llama 3, Mistral, ...), loaded as-is;
- dream: Dream-v0 (`model_type` "Dream"), Qwen2.5-shaped weights with the same tensor names, run on Qwen2 modules;
- llada: LLaDA (`model_type` "llada"), LLaMA-shaped weights under OLMo-style names, run on Llama modules;
- diffusion_gemma: native in transformers 5; only its text encoder is kept.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and transformers are imported where used: `longretr models` reads configs without them
    import torch
    from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

REMOTE_PREFIX = "remote-code:"
# what a converted folder's tokenizer_config.json adds to its tokenizer.json (load_tokenizer)
CONVERTED_TOKENIZER_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "sep_token", "cls_token",
                            "model_max_length")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message names the checkpoint and the problem."""


def read_checkpoint_config(source: Path | str, local_only: bool = False) -> dict:
    """The checkpoint's own config.json as a dict (local folder, or hub id through the HF cache)."""
    path = checkpoint_file(source, "config.json", local_only=local_only)
    if path is None:
        offline = local_only or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        where = "in the Hugging Face cache" if offline else (
            "(not a folder, not in the Hugging Face cache, and not downloadable now; without a network, "
            "HF_HUB_OFFLINE=1 says so at once instead of retrying for half a minute)")
        raise CheckpointError(f"{source}: no config.json {where}")
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not a readable config.json: {e}") from e
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise CheckpointError(f"{path}: config.json has no model_type")
    return raw


def checkpoint_file(source: Path | str, name: str, local_only: bool = False) -> Path | None:
    """A file of a checkpoint folder or hub repository, or None where it has none."""
    if Path(source).is_dir():
        path = Path(source) / name
        return path if path.is_file() else None
    if looks_like_path(str(source)):  # not a hub id: the hub's "Repo id must be in the form ..." would mislead
        raise CheckpointError(f"{source}: {'not a folder' if Path(source).exists() else 'no such folder'}")
    if local_only:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(str(source), name, cache_dir=hf_cache_dir())
        return Path(found) if isinstance(found, str) else None
    from transformers.utils import cached_file

    try:
        found = cached_file(str(source), name, _raise_exceptions_for_missing_entries=False)
    except OSError as e:
        raise CheckpointError(f"{source}: cannot read {name}: {e}") from e
    return Path(found) if found else None


def looks_like_path(spec: str) -> bool:
    """A backbone given as a path, not as a hub id ("owner/name", or a bare "name" such as gpt2)."""
    return spec.startswith((".", "/", "~")) or spec.count("/") > 1


def hf_cache_dir() -> str | None:
    """Read at call time (huggingface_hub reads its environment once, at import)."""
    return os.environ.get("HF_HUB_CACHE") or None


class Family:
    """The native family; subclasses translate other on-disk formats."""

    name = "native"
    # Regex on original tensor / module names -> native module path (checkpoint weights and adapter weights alike).
    key_mapping: dict[str, str] = {}
    # Used when the tokenizer files ask for custom code: the name of the transformers class that reads the same files.
    tokenizer_class = "PreTrainedTokenizerFast"

    def native_config(self, raw: dict, bidirectional: bool) -> PreTrainedConfig:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING

        config = CONFIG_MAPPING[raw["model_type"]].from_dict(dict(raw))
        if hasattr(config, "use_bidirectional_attention"):
            # Gemma 3's switch, set after construction exactly as `AutoConfig.from_pretrained(..., switch)` does:
            # the sliding window keeps its w keys on each side (constructing with the switch would halve it). Indexes
            # built with the default model depend on this, so it stays.
            config.use_bidirectional_attention = bidirectional
        return config

    def empty_model(self, config: PreTrainedConfig) -> torch.nn.Module:
        """The encoder the backbone runs, built from the config only (for counting parameters)."""
        from transformers import AutoModel

        return AutoModel.from_config(config)

    def load(self, source: Path | str, config: PreTrainedConfig, dtype: torch.dtype) -> PreTrainedModel:
        from transformers import AutoModel

        # The class follows the native config given here, not the checkpoint's model_type.
        model, info = AutoModel.from_pretrained(source, config=config, dtype=dtype, output_loading_info=True,
                                                key_mapping=self.key_mapping or None, trust_remote_code=False)
        _check_loaded(source, self.name, info)
        return model

    def special_token_ids(self, raw: dict) -> dict[str, int]:
        """Token ids that must never reach pooling as document content (mask, pad)."""
        ids = {k: raw.get(f"{k}_token_id") for k in ("mask", "pad")}
        return {k: v for k, v in ids.items() if isinstance(v, int)}


def _check_loaded(source: Path | str, family: str, info: dict) -> None:
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(m) for m in info.get("mismatched_keys") or [])
    if missing or mismatched:
        problems = []
        if missing:
            problems.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if mismatched:
            problems.append(f"{len(mismatched)} weights of the wrong shape (e.g. {mismatched[0]})")
        raise CheckpointError(f"{source}: does not match the {family} layout its config.json describes: "
                              + "; ".join(problems))


# Dream ------------------------------------------------------------------------------------------------------------

# DreamConfig's own defaults (configuration_dream.py), for fields a config.json leaves out.
DREAM_DEFAULTS = {
    "vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 22016, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu", "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": False, "rope_theta": 10000.0, "rope_scaling": None,
    "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28, "attention_dropout": 0.0,
    "mask_token_id": 151666, "pad_token_id": 151643,
}
QWEN2_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
                "rope_theta", "rope_scaling", "use_sliding_window", "sliding_window", "max_window_layers",
                "attention_dropout", "pad_token_id", "bos_token_id", "eos_token_id", "initializer_range")


class DreamFamily(Family):
    """Dream-v0: Qwen2 decoder layers (q/k/v bias, no o bias) run without a causal mask. Its tensor names are
    Qwen2's (`model.layers.N.self_attn.q_proj`, ..., `lm_head`), so only the config is translated."""

    name = "dream"
    key_mapping = {r"^model\.(?=(layers|embed_tokens|norm)\.)": ""}  # adapters saved on DreamModel
    tokenizer_class = "Qwen2Tokenizer"  # DreamTokenizer (custom code) is Qwen2's byte-level BPE over the same files

    def native_config(self, raw: dict, bidirectional: bool) -> PreTrainedConfig:
        from transformers import LlamaConfig, Qwen2Config

        merged = {**DREAM_DEFAULTS, **raw}
        fields = {k: merged[k] for k in QWEN2_FIELDS if k in merged}
        if merged.get("attention_bias", True) is False:  # derivatives that dropped the q/k/v bias: Llama layers
            for k in ("use_sliding_window", "sliding_window", "max_window_layers"):
                fields.pop(k, None)
            return LlamaConfig.from_dict({**fields, "attention_bias": False, "mlp_bias": bool(merged.get("mlp_bias"))})
        return Qwen2Config.from_dict(fields)

    def special_token_ids(self, raw: dict) -> dict[str, int]:
        return super().special_token_ids({**DREAM_DEFAULTS, **raw})


# LLaDA ------------------------------------------------------------------------------------------------------------

# LLaDA's ModelConfig defaults (configuration_llada.py), for fields a config.json leaves out.
LLADA_DEFAULTS: dict[str, Any] = {
    "d_model": 768, "n_heads": 12, "n_kv_heads": None, "n_layers": 12, "mlp_ratio": 4, "mlp_hidden_size": None,
    "activation_type": "swiglu", "block_type": "sequential", "block_group_size": 1, "alibi": False, "rope": False,
    "rope_full_precision": True, "attention_layer_norm": False, "input_emb_norm": False, "layer_norm_type": "default",
    "layer_norm_with_affine": True, "rms_norm_eps": 1e-5, "max_sequence_length": 1024, "rope_theta": 10000.0,
    "include_qkv_bias": False, "include_bias": False, "bias_for_layer_norm": None, "vocab_size": 50257,
    "embedding_size": 50304, "multi_query_attention": None, "eos_token_id": 50256, "pad_token_id": 50256,
    "mask_token_id": 50256,
}
_BLOCK = r"^model\.transformer\.blocks\.(\d+)\."
LLADA_KEY_MAPPING = {
    r"^model\.transformer\.wte\.": "embed_tokens.",
    r"^model\.transformer\.ln_f\.": "norm.",
    _BLOCK + r"q_proj\.": r"layers.\1.self_attn.q_proj.",
    _BLOCK + r"k_proj\.": r"layers.\1.self_attn.k_proj.",
    _BLOCK + r"v_proj\.": r"layers.\1.self_attn.v_proj.",
    _BLOCK + r"attn_out\.": r"layers.\1.self_attn.o_proj.",
    _BLOCK + r"ff_proj\.": r"layers.\1.mlp.gate_proj.",  # activated branch: act(ff_proj(x)) * up_proj(x)
    _BLOCK + r"up_proj\.": r"layers.\1.mlp.up_proj.",
    _BLOCK + r"ff_out\.": r"layers.\1.mlp.down_proj.",  # (model.transformer.ff_out, the LM head, is not used)
    _BLOCK + r"attn_norm\.": r"layers.\1.input_layernorm.",
    _BLOCK + r"ff_norm\.": r"layers.\1.post_attention_layernorm.",
}
LLADA_ACTIVATIONS = {"silu": "silu", "gelu": "gelu", "relu": "relu"}


class LLaDAFamily(Family):
    """LLaDA: the "llama" block of its OLMo-derived code (RMSNorm, RoPE, SwiGLU, no causal mask) under its own
    tensor names (`model.transformer.blocks.N.attn_out`, `ff_proj`, ...). Run on Llama modules, or Qwen2 ones where
    only q/k/v carry a bias."""

    name = "llada"
    key_mapping = LLADA_KEY_MAPPING

    def native_config(self, raw: dict, bidirectional: bool) -> PreTrainedConfig:
        from transformers import LlamaConfig, Qwen2Config

        c = {**LLADA_DEFAULTS, **raw}
        unsupported = {
            "block_type": c["block_type"] != "llama",
            "alibi": bool(c["alibi"]),
            "rope": not c["rope"],
            "attention_layer_norm": bool(c["attention_layer_norm"]),
            "input_emb_norm": bool(c["input_emb_norm"]),
            "layer_norm_type": c["layer_norm_type"] != "rms",
            "layer_norm_with_affine": not c["layer_norm_with_affine"],
            "bias_for_layer_norm": bool(c["include_bias"] if c["bias_for_layer_norm"] is None
                                        else c["bias_for_layer_norm"]),
            "activation_type": c["activation_type"] not in LLADA_ACTIVATIONS,
            "block_group_size": c["block_group_size"] != 1,
        }
        bad = [f"{k}={c[k]!r}" for k, is_bad in unsupported.items() if is_bad]
        if bad:
            raise CheckpointError(f"LLaDA config with {', '.join(bad)} has no native equivalent "
                                  "(supported: the released 'llama' block with RMSNorm, RoPE and SwiGLU)")
        n_kv = c["n_kv_heads"]
        if n_kv is None:
            n_kv = 1 if c["multi_query_attention"] else c["n_heads"]
        fields = {
            "hidden_size": c["d_model"],
            "intermediate_size": c["mlp_hidden_size"] or c["mlp_ratio"] * c["d_model"],
            "num_hidden_layers": c["n_layers"],
            "num_attention_heads": c["n_heads"],
            "num_key_value_heads": n_kv,
            "vocab_size": c["embedding_size"] or c["vocab_size"],
            "hidden_act": LLADA_ACTIVATIONS[c["activation_type"]],
            "rms_norm_eps": c["rms_norm_eps"],
            "rope_theta": c["rope_theta"],
            "max_position_embeddings": c["max_sequence_length"],
            "pad_token_id": c["pad_token_id"],
            "eos_token_id": c["eos_token_id"],
        }
        if c["include_qkv_bias"] and not c["include_bias"]:  # bias on q/k/v only: exactly Qwen2's layout
            return Qwen2Config.from_dict({**fields, "use_sliding_window": False})
        return LlamaConfig.from_dict({**fields, "attention_bias": bool(c["include_bias"]),
                                      "mlp_bias": bool(c["include_bias"])})

    def special_token_ids(self, raw: dict) -> dict[str, int]:
        return super().special_token_ids({**LLADA_DEFAULTS, **raw})


# DiffusionGemma ---------------------------------------------------------------------------------------------------


class DiffusionGemmaFamily(Family):
    """DiffusionGemma (transformers 5): an encoder whose text layers the block-diffusion decoder shares. Embeddings
    come from the text encoder alone; `bidirectional` switches it to full (non-causal) attention on all tokens, with
    the symmetric sliding window the config defines for that mode."""

    name = "diffusion_gemma"

    def native_config(self, raw: dict, bidirectional: bool) -> PreTrainedConfig:
        from transformers import DiffusionGemmaConfig

        text = dict(raw.get("text_config") or {})
        if text.get("use_bidirectional_attention") == "all":
            text["use_bidirectional_attention"] = None
        config = DiffusionGemmaConfig.from_dict({**raw, "text_config": text})
        if bidirectional:
            # What use_bidirectional_attention="all" means (no causal mask, a symmetric window of w//2 + 1 exclusive)
            # without setting it: in transformers 5.24 and 5.25 "all" makes the encoder pass is_causal twice to
            # attention and fail. set_causal() turns the attention modules bidirectional.
            config.text_config.sliding_window = config.text_config.sliding_window // 2 + 1
        return config

    def empty_model(self, config: PreTrainedConfig) -> torch.nn.Module:
        from transformers.models.diffusion_gemma.modeling_diffusion_gemma import DiffusionGemmaEncoderTextModel

        return DiffusionGemmaEncoderTextModel(config.text_config)

    def load(self, source: Path | str, config: PreTrainedConfig, dtype: torch.dtype) -> PreTrainedModel:
        from transformers import DiffusionGemmaModel

        # Load the whole model so transformers resolves the encoder/decoder weight sharing, keep the text encoder.
        full, info = DiffusionGemmaModel.from_pretrained(source, config=config, dtype=dtype, output_loading_info=True)
        _check_loaded(source, self.name, info)
        return full.encoder.language_model

    def special_token_ids(self, raw: dict) -> dict[str, int]:
        return super().special_token_ids(raw.get("text_config") or {})


FAMILIES: dict[str, Family] = {"dream": DreamFamily(), "llada": LLaDAFamily(),
                               "diffusion_gemma": DiffusionGemmaFamily()}
NATIVE = Family()


def family_for(raw: dict, source: Path | str) -> Family:
    """The family that loads this checkpoint natively; custom-code-only checkpoints get a clear refusal."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = str(raw["model_type"])
    if model_type.lower() in FAMILIES:
        return FAMILIES[model_type.lower()]
    if model_type in CONFIG_MAPPING:
        return NATIVE
    if raw.get("auto_map"):
        raise CheckpointError(
            f"{source}: model_type {model_type!r} exists only as custom code ({raw['auto_map']}) and longretr has no "
            f"native mapping for it; to run that code anyway, set backbone = \"{REMOTE_PREFIX}{source}\"")
    raise CheckpointError(f"{source}: model_type {model_type!r} is not supported (known families: native "
                          f"transformers types, {', '.join(FAMILIES)})")


def load_tokenizer(source: Path | str, family: Family, raw: dict, converted: bool = False) -> PreTrainedTokenizerBase:
    """The checkpoint's tokenizer without custom code; mask and pad tokens filled in from config.json if missing.

    `converted`: a folder longretr de-quantised, whose tokenizer.json that same tokenizer class wrote. It is read as
    is, by the tokenizers library: 1 s for the default's 33 MB file, against 2.8 s through AutoTokenizer, which parses
    it three times in Python and rebuilds the vocabulary (same ids and offsets on the 300 demo pages, by hand,
    2026-12-07; tests/test_backbones.py on a tiny Gemma tokenizer)."""
    import transformers

    tok_cfg_path = checkpoint_file(source, "tokenizer_config.json")
    tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path else {}
    class_name = tok_cfg.get("tokenizer_class")
    if converted and (Path(source) / "tokenizer.json").is_file():
        kept = {k: v for k, v in tok_cfg.items() if k in CONVERTED_TOKENIZER_KEYS and isinstance(v, (str, int))}
        tokenizer = transformers.TokenizersBackend(tokenizer_file=str(Path(source) / "tokenizer.json"), **kept)
    elif tok_cfg.get("auto_map") or (class_name and not hasattr(transformers, class_name)):
        # Custom tokenizer code (e.g. DreamTokenizer): read the same files with the native class.
        tokenizer = getattr(transformers, family.tokenizer_class).from_pretrained(source)
    else:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=False)
    ids = family.special_token_ids(raw)
    if tokenizer.pad_token_id is None:
        pad = ids.get("pad")
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad) if pad is not None else tokenizer.eos_token
    if getattr(tokenizer, "mask_token_id", None) is None and "mask" in ids and ids["mask"] < len(tokenizer):
        tokenizer.mask_token = tokenizer.convert_ids_to_tokens(ids["mask"])
    return tokenizer
