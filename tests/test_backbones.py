"""Real diffusion backbones and autoregressive baselines, loaded natively.

Each test checkpoint is tiny and random but written in its ORIGINAL on-disk format: the original config.json fields and
model_type, the original tensor names (sharded with an index, as released), the original tokenizer files. It is loaded
through the same path a hub id takes, and its hidden states are checked against a reference forward written here from
the published architecture (modeling_dream.py, modeling_llada.py) run on the original tensors, or against transformers'
own implementation for native families.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tiny_models import WORDS, make_tokenizer, write_config, write_lora
from tokenizers import ByteLevelBPETokenizer
from typer.testing import CliRunner

from longretr.backbone import load_backbone
from longretr.cli import app
from longretr.config import REPO_CONFIGS, ModelConfig, load_config
from longretr.embedder import Embedder, pool
from longretr.families import CheckpointError

H, N_LAYERS, N_HEADS, N_KV, FFN = 32, 2, 4, 2, 64
HEAD_DIM = H // N_HEADS
ORDINARY = (4, 150)  # token ids that are ordinary text in every tiny tokenizer here (specials: 0-3 and >= 153)
SEED_TEXTS = ["the quick brown fox jumps over a lazy dog", "parsing command line arguments",
              "a digest of every file in the archive with json csv", "dates times threads"]


# ---------------------------------------------------------------------------------------------------------------
# Writing checkpoints in their original formats


def _rand(gen: torch.Generator, *shape: int, norm: bool = False) -> torch.Tensor:
    if norm:  # norm weights near 1, like trained ones
        return 1.0 + 0.1 * torch.randn(*shape, generator=gen)
    return 0.2 * torch.randn(*shape, generator=gen)


def save_sharded(out: Path, tensors: dict[str, torch.Tensor], shards: int = 2) -> None:
    """model-0000k-of-0000n.safetensors + model.safetensors.index.json, as the released checkpoints are stored."""
    names = sorted(tensors)
    weight_map = {}
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n].contiguous() for n in names[k::shards]}
        save_file(part, out / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def write_qwen_tokenizer(out: Path, specials: list[str], tokenizer_class: str, auto_map: bool) -> dict[str, int]:
    """Qwen2-style byte-level BPE (vocab.json + merges.txt + tokenizer_config.json). Dream ships these files with its
    custom DreamTokenizer class; Qwen2.5 with Qwen2Tokenizer. Returns the special tokens' ids."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 20, vocab_size=300, min_frequency=1)
    bpe.save_model(str(out))
    n = len(json.loads((out / "vocab.json").read_text()))
    ids = {s: n + i for i, s in enumerate(specials)}
    added = {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for s, i in ids.items()}
    config = {"added_tokens_decoder": added, "bos_token": None, "eos_token": "<|endoftext|>",
              "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": False, "errors": "replace",
              "model_max_length": 131072, "split_special_tokens": False, "tokenizer_class": tokenizer_class,
              "unk_token": None, "additional_special_tokens": ["<|im_start|>", "<|im_end|>"]}
    if auto_map:
        config["auto_map"] = {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}
        config["bos_token"] = "<|beginoftext|>"
        config["mask_token"] = "<|mask|>"
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return ids


DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|beginoftext|>", "<|mask|>"]


def write_dream(out: Path, seed: int = 0, **config_overrides) -> Path:
    """Dream-org/Dream-v0-Base-7B's layout, shrunk: config.json as released (model_type "Dream", auto_map to
    its custom code, mask 151666 / pad 151643 there), Qwen2 tensor names under model. plus lm_head."""
    out.mkdir(parents=True, exist_ok=True)
    ids = write_qwen_tokenizer(out, DREAM_SPECIALS, "DreamTokenizer", auto_map=True)
    vocab = max(ids.values()) + 1
    config = {
        "architectures": ["DreamModel"], "attention_dropout": 0.0,
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|endoftext|>"], "hidden_act": "silu",
        "hidden_size": H, "initializer_range": 0.02, "intermediate_size": FFN, "mask_token_id": ids["<|mask|>"],
        "max_position_embeddings": 512, "max_window_layers": N_LAYERS, "model_type": "Dream",
        "num_attention_heads": N_HEADS, "num_hidden_layers": N_LAYERS, "num_key_value_heads": N_KV,
        "pad_token_id": ids["<|endoftext|>"], "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
        "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2", "use_cache": False, "use_sliding_window": False, "vocab_size": vocab,
        **config_overrides,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": _rand(g, vocab, H), "model.norm.weight": _rand(g, H, norm=True),
          "lm_head.weight": _rand(g, vocab, H)}
    for i in range(N_LAYERS):
        p = f"model.layers.{i}."
        for name, rows in (("q_proj", H), ("k_proj", N_KV * HEAD_DIM), ("v_proj", N_KV * HEAD_DIM)):
            sd[p + f"self_attn.{name}.weight"] = _rand(g, rows, H)
            if config.get("attention_bias", True):  # the released code always has it; some derivatives do not
                sd[p + f"self_attn.{name}.bias"] = _rand(g, rows)
        sd[p + "self_attn.o_proj.weight"] = _rand(g, H, H)
        sd[p + "mlp.gate_proj.weight"] = _rand(g, FFN, H)
        sd[p + "mlp.up_proj.weight"] = _rand(g, FFN, H)
        sd[p + "mlp.down_proj.weight"] = _rand(g, H, FFN)
        sd[p + "input_layernorm.weight"] = _rand(g, H, norm=True)
        sd[p + "post_attention_layernorm.weight"] = _rand(g, H, norm=True)
    save_sharded(out, sd)
    return out


LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>"]


def write_llada(out: Path, seed: int = 1, **config_overrides) -> Path:
    """GSAI-ML/LLaDA-8B-Base's layout, shrunk: its config.json fields (model_type "llada", d_model, n_heads,
    block_type "llama", rope_theta 500000, ...), OLMo-style tensor names, a PreTrainedTokenizerFast tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    tok = make_tokenizer(out)  # <pad> <eos> <bos> <unk> + words
    tok.add_special_tokens({"additional_special_tokens": LLADA_SPECIALS})
    tok.bos_token, tok.eos_token, tok.pad_token = "<|startoftext|>", "<|endoftext|>", None  # pad: from config.json
    tok.save_pretrained(out)
    ids = {s: tok.convert_tokens_to_ids(s) for s in LLADA_SPECIALS}
    vocab = len(tok)
    config = {
        "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": H,
        "embedding_dropout": 0.0, "embedding_size": vocab, "eos_token_id": ids["<|endoftext|>"],
        "flash_attention": False, "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None,
        "init_device": "meta", "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False,
        "layer_norm_type": "rms", "layer_norm_with_affine": True, "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": 512, "mlp_hidden_size": FFN, "mlp_ratio": 4, "model_type": "llada",
        "multi_query_attention": None, "n_heads": N_HEADS, "n_kv_heads": N_KV, "n_layers": N_LAYERS,
        "pad_token_id": ids["<|endoftext|>"], "precision": "amp_bf16", "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True, "rope_theta": 500000.0,
        "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False, "vocab_size": vocab,
        "weight_tying": False, **config_overrides,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    g = torch.Generator().manual_seed(seed)
    t = "model.transformer."
    sd = {t + "wte.weight": _rand(g, vocab, H), t + "ln_f.weight": _rand(g, H, norm=True),
          t + "ff_out.weight": _rand(g, vocab, H)}  # the LM head
    for i in range(N_LAYERS):
        b = f"{t}blocks.{i}."
        sd[b + "q_proj.weight"] = _rand(g, H, H)
        sd[b + "k_proj.weight"] = _rand(g, N_KV * HEAD_DIM, H)
        sd[b + "v_proj.weight"] = _rand(g, N_KV * HEAD_DIM, H)
        if config["include_qkv_bias"]:
            for name, rows in (("q_proj", H), ("k_proj", N_KV * HEAD_DIM), ("v_proj", N_KV * HEAD_DIM)):
                sd[b + f"{name}.bias"] = _rand(g, rows)
        sd[b + "attn_out.weight"] = _rand(g, H, H)
        sd[b + "ff_proj.weight"] = _rand(g, FFN, H)
        sd[b + "up_proj.weight"] = _rand(g, FFN, H)
        sd[b + "ff_out.weight"] = _rand(g, H, FFN)
        sd[b + "attn_norm.weight"] = _rand(g, H, norm=True)
        sd[b + "ff_norm.weight"] = _rand(g, H, norm=True)
    save_sharded(out, sd)
    return out


def write_native(out: Path, kind: str, seed: int = 2) -> Path:
    """Native autoregressive checkpoints are transformers' own ...ForCausalLM save format."""
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    out.mkdir(parents=True, exist_ok=True)
    if kind == "qwen2":
        ids = write_qwen_tokenizer(out, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "Qwen2Tokenizer", False)
        vocab = max(ids.values()) + 1
    else:
        vocab = len(make_tokenizer(out))
    common = dict(vocab_size=vocab, hidden_size=H, intermediate_size=FFN, num_hidden_layers=N_LAYERS,
                  num_attention_heads=N_HEADS, num_key_value_heads=N_KV, max_position_embeddings=512,
                  tie_word_embeddings=False)
    torch.manual_seed(seed)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, rope_theta=1e6, pad_token_id=ids["<|endoftext|>"]))
    elif kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, rope_theta=5e5, pad_token_id=0, bos_token_id=2,
                                             eos_token_id=1))
    else:  # Mistral-7B-v0.1 has a sliding window in every layer; a short one here exercises the windowed path
        model = MistralForCausalLM(MistralConfig(**common, sliding_window=6, pad_token_id=0, bos_token_id=2,
                                                 eos_token_id=1))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(out)
    return out


def write_diffusion_gemma(out: Path, seed: int = 3) -> Path:
    """DiffusionGemma as transformers 5 saves it (its released format): encoder + diffusion decoder sharing text
    weights, a vision tower, MoE layers, sliding and full layers with different head sizes."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    out.mkdir(parents=True, exist_ok=True)
    vocab = len(make_tokenizer(out)) + 3  # + image / begin-of-image / end-of-image tokens
    text = dict(vocab_size=vocab, hidden_size=H, intermediate_size=FFN, num_hidden_layers=3,
                num_attention_heads=N_HEADS, num_key_value_heads=N_KV, head_dim=HEAD_DIM, global_head_dim=16,
                num_global_key_value_heads=1, sliding_window=8,
                layer_types=["sliding_attention", "sliding_attention", "full_attention"], num_experts=4,
                top_k_experts=2, moe_intermediate_size=16, max_position_embeddings=512, pad_token_id=0,
                eos_token_id=1, bos_token_id=2)
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=8, position_embedding_size=64, patch_size=4)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(DiffusionGemmaConfig(
        text_config=text, vision_config=vision, boi_token_id=vocab - 3, eoi_token_id=vocab - 2,
        image_token_id=vocab - 1))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(out)
    return out


WRITERS = {"dream": write_dream, "llada": write_llada, "diffusion_gemma": write_diffusion_gemma,
           "qwen2": lambda out: write_native(out, "qwen2"), "llama": lambda out: write_native(out, "llama"),
           "mistral": lambda out: write_native(out, "mistral")}
DIFFUSION = ["dream", "llada", "diffusion_gemma"]
AUTOREGRESSIVE = ["qwen2", "llama", "mistral"]


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("original-formats")
    return {name: write(root / name) for name, write in WRITERS.items()}


def model_config(backbone: Path, attention: str = "bidirectional", pooling: str = "mean", **kw) -> ModelConfig:
    return ModelConfig(name="tiny", backbone=str(backbone), attention=attention, pooling=pooling, max_tokens=64,
                       dtype="float32", **kw)


def load(backbone: Path, attention: str = "bidirectional", **kw):
    return load_backbone(model_config(backbone, attention, **kw), torch.float32, "cpu")


def original_tensors(folder: Path) -> dict[str, torch.Tensor]:
    sd = {}
    for f in sorted(folder.glob("model*.safetensors")):
        sd.update(load_file(f))
    return sd


def token_batch(vocab_low: int, vocab_high: int, lengths: list[int], seed: int = 0):
    """Right-padded ids and mask for rows of the given lengths (pad id 0 where masked)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.randint(vocab_low, vocab_high, (n,), generator=g)
        mask[r, :n] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------------------------
# Reference forwards, written from the published architectures and run on the original tensors


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotary(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE in the rotate-half layout both Dream (Qwen2 code) and LLaDA (x.view(..., 2, hs // 2)) use."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d)
    angles = torch.outer(torch.arange(x.shape[2], dtype=torch.float32), inv)
    angles = torch.cat([angles, angles], -1)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * angles.cos() + torch.cat([-x2, x1], -1) * angles.sin()


def attend(q, k, v, keep=None, causal=False, window=None):
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    i = torch.arange(q.shape[2])
    allowed = torch.ones(q.shape[2], q.shape[2], dtype=torch.bool)
    if causal:
        allowed &= i[None, :] <= i[:, None]
    if window is not None:
        allowed &= (i[:, None] - i[None, :]).abs() < window
    allowed = allowed[None, None] if keep is None else allowed[None, None] & keep[:, None, None, :].bool()
    return scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1) @ v


def split_heads(x, n):
    return x.view(x.shape[0], x.shape[1], n, -1).transpose(1, 2)


def merge_heads(x):
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], -1)


def qwen_style_reference(sd, cfg, ids, keep=None, causal=False, window=None, qkv_bias=True, prefix="model."):
    """modeling_dream.py's DreamBaseModel (Qwen2's decoder layer: q/k/v with bias, o_proj without; no causal mask).
    Qwen2, Llama and Mistral baselines share this layer (Llama/Mistral without the bias)."""
    def lin(x, name, bias=False):
        y = x @ sd[name + ".weight"].T
        return y + sd[name + ".bias"] if bias else y

    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta") or cfg["rope_parameters"]["rope_theta"]  # v4 / v5
    x = sd[prefix + "embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"{prefix}layers.{i}."
        h = rms_norm(x, sd[p + "input_layernorm.weight"], eps)
        q = rotary(split_heads(lin(h, p + "self_attn.q_proj", qkv_bias), cfg["num_attention_heads"]), theta)
        k = rotary(split_heads(lin(h, p + "self_attn.k_proj", qkv_bias), cfg["num_key_value_heads"]), theta)
        v = split_heads(lin(h, p + "self_attn.v_proj", qkv_bias), cfg["num_key_value_heads"])
        x = x + lin(merge_heads(attend(q, k, v, keep, causal, window)), p + "self_attn.o_proj")
        h = rms_norm(x, sd[p + "post_attention_layernorm.weight"], eps)
        x = x + lin(F.silu(lin(h, p + "mlp.gate_proj")) * lin(h, p + "mlp.up_proj"), p + "mlp.down_proj")
    return rms_norm(x, sd[prefix + "norm.weight"], eps)


def llada_reference(sd, cfg, ids, keep=None):
    """modeling_llada.py's LLaDAModel with LLaDALlamaBlock: x + attn_out(attention(attn_norm(x))), then
    x + ff_out(act(ff_proj(h)) * up_proj(h)) with h = ff_norm(x); ln_f; attention never causal."""
    eps, theta, t = cfg["rms_norm_eps"], cfg["rope_theta"], "model.transformer."
    x = sd[t + "wte.weight"][ids]
    for i in range(cfg["n_layers"]):
        b = f"{t}blocks.{i}."
        h = rms_norm(x, sd[b + "attn_norm.weight"], eps)
        # include_qkv_bias puts a bias on q/k/v only
        q, k, v = (h @ sd[f"{b}{n}.weight"].T + sd.get(f"{b}{n}.bias", 0) for n in ("q_proj", "k_proj", "v_proj"))
        q = rotary(split_heads(q, cfg["n_heads"]), theta)
        k = rotary(split_heads(k, cfg["n_kv_heads"]), theta)
        v = split_heads(v, cfg["n_kv_heads"])
        x = x + merge_heads(attend(q, k, v, keep)) @ sd[b + "attn_out.weight"].T
        h = rms_norm(x, sd[b + "ff_norm.weight"], eps)
        x = x + (F.silu(h @ sd[b + "ff_proj.weight"].T) * (h @ sd[b + "up_proj.weight"].T)) @ sd[b + "ff_out.weight"].T
    return rms_norm(x, sd[t + "ln_f.weight"], eps)


def reference_states(name: str, folder: Path, ids, keep=None, causal=False):
    cfg = json.loads((folder / "config.json").read_text())
    sd = original_tensors(folder)
    if name == "llada":
        return llada_reference(sd, cfg, ids, keep)
    return qwen_style_reference(sd, cfg, ids, keep, causal, window=cfg.get("sliding_window") if name == "mistral"
                                else None, qkv_bias=name == "qwen2" or (name == "dream" and cfg.get("attention_bias",
                                                                                                     True)))


# ---------------------------------------------------------------------------------------------------------------
# The mapping preserves the function


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_diffusion_checkpoint_matches_its_published_architecture(checkpoints, name):
    model, _ = load(checkpoints[name])
    ids, mask = token_batch(*ORDINARY, [23, 9, 17])
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for r, n in enumerate(mask.sum(1).tolist()):  # the reference sees each text alone, unpadded
            ref = reference_states(name, checkpoints[name], ids[r: r + 1, :n])[0]
            assert torch.allclose(ours[r, :n], ref, atol=1e-4), (name, r, (ours[r, :n] - ref).abs().max())


@pytest.mark.parametrize("name, overrides, runs_as", [
    ("llada", {"include_qkv_bias": True}, "Qwen2Model"),  # bias on q/k/v only: Qwen2's layout
    ("dream", {"attention_bias": False}, "LlamaModel"),  # Dream derivatives without the q/k/v bias
])
def test_format_variants_map_onto_the_matching_native_layout(tmp_path, name, overrides, runs_as):
    folder = WRITERS[name](tmp_path / name, **overrides)
    model, _ = load(folder)
    assert type(model).__name__ == runs_as
    ids, _ = token_batch(*ORDINARY, [16])
    with torch.no_grad():
        ours = model(input_ids=ids).last_hidden_state
    assert torch.allclose(ours, reference_states(name, folder, ids), atol=1e-4)


@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_autoregressive_baseline_matches_transformers_when_causal(checkpoints, name):
    from transformers import AutoModel

    ref_model = AutoModel.from_pretrained(checkpoints[name], attn_implementation="eager").eval()
    model, _ = load(checkpoints[name], "causal")
    ids, mask = token_batch(*ORDINARY, [20, 7, 13])
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(ours[real], ref[real], atol=1e-4), (ours[real] - ref[real]).abs().max()


@pytest.mark.parametrize("name", AUTOREGRESSIVE)
def test_autoregressive_baseline_made_bidirectional_matches_reference(checkpoints, name):
    model, _ = load(checkpoints[name], "bidirectional")
    ids, mask = token_batch(*ORDINARY, [20, 7])
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
        for r, n in enumerate(mask.sum(1).tolist()):
            ref = reference_states(name, checkpoints[name], ids[r: r + 1, :n])[0]
            assert torch.allclose(ours[r, :n], ref, atol=1e-4), (name, r, (ours[r, :n] - ref).abs().max())


def test_diffusion_gemma_text_encoder_matches_transformers(checkpoints):
    """Causal: transformers' own encoder. Bidirectional: the same eager layers given the bidirectional masks of
    use_bidirectional_attention="all" (no causal mask, window w // 2 + 1 exclusive), which transformers 5.24 cannot
    run itself (the encoder then passes is_causal twice)."""
    from transformers import DiffusionGemmaConfig, DiffusionGemmaModel

    folder = checkpoints["diffusion_gemma"]
    raw = json.loads((folder / "config.json").read_text())
    ids, mask = token_batch(*ORDINARY, [30, 12])
    real = mask.bool()
    causal_ref = DiffusionGemmaModel.from_pretrained(folder, attn_implementation="eager").eval()
    ours, _ = load(folder, "causal")
    with torch.no_grad():
        a = causal_ref.encoder.language_model(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(a[real], b[real], atol=1e-4), (a[real] - b[real]).abs().max()

    config = DiffusionGemmaConfig.from_dict(raw)
    window = raw["text_config"]["sliding_window"] // 2 + 1
    config.text_config.sliding_window = window
    ref = DiffusionGemmaModel.from_pretrained(folder, config=config, attn_implementation="eager").eval()
    i = torch.arange(ids.shape[1])
    low = torch.finfo(torch.float32).min
    full = torch.zeros(2, 1, ids.shape[1], ids.shape[1]).masked_fill(~real[:, None, None, :], low)
    sliding = full.masked_fill(((i[:, None] - i[None, :]).abs() >= window)[None, None], low)
    ours, _ = load(folder, "bidirectional")
    with torch.no_grad():
        a = ref.encoder.language_model(input_ids=ids, attention_mask={"full_attention": full,
                                                                      "sliding_attention": sliding}).last_hidden_state
        b = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(a[real], b[real], atol=1e-4), (a[real] - b[real]).abs().max()


# ---------------------------------------------------------------------------------------------------------------
# Attention direction, padding, batch composition


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_later_tokens_reach_earlier_ones_only_when_bidirectional(checkpoints, name, attention):
    model, _ = load(checkpoints[name], attention)
    ids, _ = token_batch(*ORDINARY, [10])
    changed = ids.clone()
    changed[0, -1] = 5 if ids[0, -1] != 5 else 6
    with torch.no_grad():
        a = model(input_ids=ids).last_hidden_state[0, :3]
        b = model(input_ids=changed).last_hidden_state[0, :3]
    # 10 tokens: the windowed layers here (6 for Mistral, 5 for DiffusionGemma) link position 9 to 0 in two layers
    assert (not torch.allclose(a, b, atol=1e-6)) == (attention == "bidirectional")


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_padding_and_batch_composition_do_not_change_embeddings(checkpoints, name, attention, pooling, monkeypatch):
    embedder = Embedder(model_config(checkpoints[name], attention, pooling), token_budget=64)
    short = "the lazy fox"
    alone = embedder.encode_documents([short], progress=False).vectors[0]
    # pack_batches gives texts this different in length a batch each (so the short one was never padded); one batch
    # makes the short one mostly padding
    monkeypatch.setattr("longretr.embedder.pack_batches", lambda lengths, budget: [list(range(len(lengths)))])
    enc = embedder.encode_documents([" ".join(SEED_TEXTS), short, SEED_TEXTS[0]], progress=False,
                                    max_tokens=embedder.config.max_tokens)  # no windows: three rows, one batch
    batch = enc.vectors
    assert enc.padding_waste > 0.4 and np.allclose(alone, batch[1], atol=1e-5)
    assert not np.allclose(batch[0], batch[2], atol=1e-3)  # and the vectors do depend on the text


@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_left_padding_gives_the_vectors_right_padding_gives(checkpoints, name, attention):
    """LLM2Vec / DiffEmbed pad on the left. Given to the model, left padding is realigned, so neither the states
    of real tokens nor any pooled vector differ from the right-padded batch longretr builds."""
    model, _ = load(checkpoints[name], attention)
    ids, mask = token_batch(*ORDINARY, [18, 6, 11])
    lengths = mask.sum(1)
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for r, n in enumerate(lengths.tolist()):
        left_ids[r, -n:], left_mask[r, -n:] = ids[r, :n], 1
    with torch.no_grad():
        right = model(input_ids=ids, attention_mask=mask).last_hidden_state
        left = model(input_ids=left_ids, attention_mask=left_mask).last_hidden_state
    for r, n in enumerate(lengths.tolist()):
        assert torch.allclose(right[r, :n], left[r, -n:], atol=1e-5), (r, (right[r, :n] - left[r, -n:]).abs().max())
    assert torch.allclose(pool(right, mask, "mean", True), pool(left, left_mask, "mean", True), atol=1e-5)
    assert torch.allclose(right[torch.arange(3), lengths - 1], left[:, -1], atol=1e-5)  # last-token pooling

    holes = mask.clone()
    holes[0, 3] = 0
    with pytest.raises(ValueError, match="contiguous"):
        model(input_ids=ids, attention_mask=holes)


@pytest.mark.parametrize("name", ["dream", "llada"])
def test_mask_and_pad_token_ids_never_reach_pooling(checkpoints, name):
    folder = checkpoints[name]
    raw = json.loads((folder / "config.json").read_text())
    mask_id, pad_id = raw["mask_token_id"], raw["pad_token_id"]
    embedder = Embedder(model_config(folder), token_budget=256)
    tok = embedder.tokenizer
    assert tok.mask_token_id == mask_id and tok.pad_token_id == pad_id  # the trainer's masking uses these
    # Text can never produce the special ids: the strings inside a document are text.
    mask_str, pad_str = tok.convert_ids_to_tokens([mask_id, pad_id])
    text = f"the fox {mask_str} jumps {pad_str} over"
    ids, _ = embedder.tokenize([text])
    assert mask_id not in ids[0] and pad_id not in ids[0]
    # Whatever fills the padded positions (pad, mask, ordinary tokens) does not change the vector.
    real, lengths = embedder.tokenize([text, " ".join(SEED_TEXTS)])
    n, longest = len(real[0]), max(len(x) for x in real)
    vectors = []
    for filler in (pad_id, mask_id, 7):
        ids = torch.full((1, longest), filler)
        ids[0, :n] = torch.tensor(real[0])
        attn = torch.zeros_like(ids)
        attn[0, :n] = 1
        with torch.no_grad():
            hidden = embedder.model(input_ids=ids, attention_mask=attn).last_hidden_state
        vectors.append(pool(hidden, attn, "mean", True))
    alone = embedder.encode_documents([text], progress=False).vectors[0]
    for v in vectors:
        assert np.allclose(v[0].numpy(), alone, atol=1e-5)


def test_the_original_code_lets_padding_into_the_embedding(checkpoints):
    """Dream's and LLaDA's own code (and DiffEmbed on top of it) never mask padding: a padded text attends to the
    padding, so its states change with the batch. longretr masks it; that is the documented difference."""
    folder = checkpoints["dream"]
    ids, mask = token_batch(*ORDINARY, [15, 6])
    unpadded = reference_states("dream", folder, ids[1:, :6])[0]
    as_original_code = reference_states("dream", folder, ids[1:])[0, :6]  # no padding mask, like the original
    model, _ = load(folder)
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state[1, :6]
    assert torch.allclose(ours, unpadded, atol=1e-4)
    assert not torch.allclose(as_original_code, unpadded, atol=1e-2)


# ---------------------------------------------------------------------------------------------------------------
# Adapters by path


def test_llada_adapter_in_its_original_names_is_merged(checkpoints, tmp_path):
    folder = checkpoints["llada"]
    targets = {f"transformer.blocks.{i}.{m}": shape for i in range(N_LAYERS)
               for m, shape in (("q_proj", (H, H)), ("attn_out", (H, H)), ("ff_out", (H, FFN)),
                                ("up_proj", (FFN, H)))}
    pairs = write_lora(tmp_path / "adapter", targets, prefix="model.")  # saved on LLaDAModelLM
    model, _ = load(folder, adapter=str(tmp_path / "adapter"))
    sd = original_tensors(folder)
    for module, (a, b) in pairs.items():
        sd[f"model.{module}.weight"] = sd[f"model.{module}.weight"] + (8 / 4) * b @ a
    cfg = json.loads((folder / "config.json").read_text())
    ids, _ = token_batch(*ORDINARY, [14])
    with torch.no_grad():
        ours = model(input_ids=ids).last_hidden_state
        plain = load(folder)[0](input_ids=ids).last_hidden_state
    assert torch.allclose(ours, llada_reference(sd, cfg, ids), atol=1e-4)
    assert not torch.allclose(ours, plain, atol=1e-2)


def test_dream_adapter_saved_on_dream_model_is_merged(checkpoints, tmp_path):
    """DiffEmbed trains LoRA on DreamModel (tensor names model.layers.N...); the backbone here is the bare encoder."""
    folder = checkpoints["dream"]
    targets = {f"layers.{i}.self_attn.{m}": (H if m in ("q_proj", "o_proj") else N_KV * HEAD_DIM, H)
               for i in range(N_LAYERS) for m in ("q_proj", "k_proj", "v_proj", "o_proj")}
    pairs = write_lora(tmp_path / "adapter", targets, prefix="model.")
    model, _ = load(folder, adapter=str(tmp_path / "adapter"))
    sd = original_tensors(folder)
    for module, (a, b) in pairs.items():
        sd[f"model.{module}.weight"] = sd[f"model.{module}.weight"] + 2.0 * b @ a
    cfg = json.loads((folder / "config.json").read_text())
    ids, _ = token_batch(*ORDINARY, [14])
    with torch.no_grad():
        ours = model(input_ids=ids).last_hidden_state
    assert torch.allclose(ours, qwen_style_reference(sd, cfg, ids), atol=1e-4)


def test_native_adapter_made_by_peft_matches_peft_merge(checkpoints, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = checkpoints["qwen2"]
    lm = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager")
    peft_lm = get_peft_model(lm, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in peft_lm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.3)
    peft_lm.save_pretrained(tmp_path / "adapter")
    expected_model = peft_lm.merge_and_unload().model.eval()
    model, _ = load(folder, "causal", adapter=str(tmp_path / "adapter"))
    ids, mask = token_batch(*ORDINARY, [12, 5])
    with torch.no_grad():
        expected = expected_model(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = model(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(ours[real], expected[real], atol=1e-4)


def test_a_list_of_adapters_is_merged_as_their_average(checkpoints, tmp_path):
    """A model soup: W + mean_i (alpha_i / r_i) B_i A_i, for adapters of different ranks and alphas."""
    folder = checkpoints["dream"]
    targets = {f"layers.{i}.self_attn.{m}": (H if m == "q_proj" else N_KV * HEAD_DIM, H)
               for i in range(N_LAYERS) for m in ("q_proj", "v_proj")}
    first = write_lora(tmp_path / "a", targets, prefix="model.", r=4, alpha=8, seed=1)
    second = write_lora(tmp_path / "b", targets, prefix="model.", r=2, alpha=8, seed=2)
    model, _ = load(folder, adapter=(str(tmp_path / "a"), str(tmp_path / "b")))
    sd = original_tensors(folder)
    for module in targets:
        (a1, b1), (a2, b2) = first[module], second[module]
        sd[f"model.{module}.weight"] = sd[f"model.{module}.weight"] + (2.0 * b1 @ a1 + 4.0 * b2 @ a2) / 2
    cfg = json.loads((folder / "config.json").read_text())
    ids, _ = token_batch(*ORDINARY, [14])
    with torch.no_grad():
        ours = model(input_ids=ids).last_hidden_state
        alone = load(folder, adapter=str(tmp_path / "a"))[0](input_ids=ids).last_hidden_state
        twice = load(folder, adapter=(str(tmp_path / "a"),) * 2)[0](input_ids=ids).last_hidden_state
    assert torch.allclose(ours, qwen_style_reference(sd, cfg, ids), atol=1e-4)
    assert torch.allclose(twice, alone, atol=1e-5)  # the average of one adapter with itself is that adapter
    weighted = load(folder, adapter=(str(tmp_path / "a"), str(tmp_path / "b")), adapter_weights=(0.3, 0.9))[0]
    sd = original_tensors(folder)
    for module in targets:
        (a1, b1), (a2, b2) = first[module], second[module]
        sd[f"model.{module}.weight"] = sd[f"model.{module}.weight"] + (0.3 * 2.0 * b1 @ a1 + 0.9 * 4.0 * b2 @ a2)
    with torch.no_grad():
        assert torch.allclose(weighted(input_ids=ids).last_hidden_state, qwen_style_reference(sd, cfg, ids), atol=1e-4)
    write_lora(tmp_path / "c", dict(list(targets.items())[:1]), prefix="model.")
    with pytest.raises(CheckpointError, match="adapts other modules"):
        load(folder, adapter=(str(tmp_path / "a"), str(tmp_path / "c")))


def test_adapter_lists_in_configs(tmp_path):
    (tmp_path / "one.toml").write_text('backbone = "x"\nadapter = "ad/a"\n')
    (tmp_path / "two.toml").write_text('backbone = "x"\nadapter = ["ad/a", "/abs/b"]\n')
    for name in ("a", "b"):
        write_lora(tmp_path / "ad" / name, {"layers.0.self_attn.q_proj": (H, H)}, prefix="model.")
    one, two = load_config(tmp_path / "one.toml"), load_config(tmp_path / "two.toml")
    assert one.adapters == (str(tmp_path / "ad" / "a"),)
    assert two.adapter == (str(tmp_path / "ad" / "a"), "/abs/b") == two.adapters
    (tmp_path / "back.toml").write_text(two.to_toml())
    assert load_config(tmp_path / "back.toml") == two
    soup = ModelConfig(name="s", backbone="x", adapter=[str(tmp_path / "ad" / "a"), str(tmp_path / "ad" / "b")])
    assert soup.fingerprint() not in {one.fingerprint(), ModelConfig(name="b", backbone="x",
                                                                      adapter=str(tmp_path / "ad" / "b")).fingerprint()}
    with pytest.raises(ValueError, match="non-empty list"):
        ModelConfig(name="e", backbone="x", adapter=[])
    weighted = ModelConfig(name="w", backbone="x", adapter=soup.adapter, adapter_weights=[0.4, 0.6])
    assert weighted.adapter_weights == (0.4, 0.6) and weighted.fingerprint() != soup.fingerprint()
    with pytest.raises(ValueError, match="2 weights for 1 adapters"):
        ModelConfig(name="w", backbone="x", adapter="ad/a", adapter_weights=[0.4, 0.6])


def test_adapter_for_another_model_is_refused(checkpoints, tmp_path):
    write_lora(tmp_path / "adapter", {"transformer.blocks.0.att_proj": (3 * H, H)}, prefix="model.")
    with pytest.raises(CheckpointError, match="adapter.*do not exist"):
        load(checkpoints["llada"], adapter=str(tmp_path / "adapter"))
    with pytest.raises(CheckpointError, match="not a PEFT adapter"):
        load(checkpoints["llada"], adapter=str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# Refusals with a clear reason


def test_llada_variant_without_native_equivalent_is_refused(tmp_path):
    folder = write_llada(tmp_path / "llada", block_type="sequential", attention_layer_norm=True)
    with pytest.raises(CheckpointError, match="block_type='sequential'.*attention_layer_norm=True"):
        load(folder)


def test_checkpoint_missing_weights_is_refused(tmp_path):
    folder = write_dream(tmp_path / "dream")
    sd = original_tensors(folder)
    del sd["model.layers.1.self_attn.k_proj.bias"]
    for f in folder.glob("model*.safetensors*"):
        f.unlink()
    save_sharded(folder, sd)
    with pytest.raises(CheckpointError, match=r"dream.*1 weights missing.*layers\.1\.self_attn\.k_proj\.bias"):
        load(folder)


CUSTOM_CONFIG = '''
from transformers import PretrainedConfig

class TinyRemoteConfig(PretrainedConfig):
    model_type = "tinyremote"

    def __init__(self, hidden_size=8, vocab_size=64, **kwargs):
        self.hidden_size, self.vocab_size = hidden_size, vocab_size
        super().__init__(**kwargs)
'''
CUSTOM_MODEL = '''
import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput
from .configuration_tinyremote import TinyRemoteConfig

class TinyRemoteModel(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.wte = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=False, **kwargs):
        h = self.wte(input_ids).cumsum(1)  # logits only unless hidden states are asked for, like LLaDAModelLM
        return CausalLMOutput(logits=h @ self.wte.weight.T, hidden_states=(h,) if output_hidden_states else None)
'''


def test_custom_code_runs_only_when_the_config_asks(tmp_path):
    folder = tmp_path / "tinyremote"
    folder.mkdir()
    vocab = len(make_tokenizer(folder))
    (folder / "configuration_tinyremote.py").write_text(CUSTOM_CONFIG)
    (folder / "modeling_tinyremote.py").write_text(CUSTOM_MODEL)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "tinyremote", "hidden_size": 8, "vocab_size": vocab, "architectures": ["TinyRemoteModel"],
        "auto_map": {"AutoConfig": "configuration_tinyremote.TinyRemoteConfig",
                     "AutoModel": "modeling_tinyremote.TinyRemoteModel"}}))
    weight = torch.randn(vocab, 8)
    save_file({"wte.weight": weight}, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=f'backbone = "remote-code:{folder}"'):
        load(folder)
    embedder = Embedder(model_config(f"remote-code:{folder}"))
    ids = embedder.tokenize(["the fox"])[0][0]
    expected = torch.nn.functional.normalize(weight[ids].cumsum(0).mean(0), dim=0)
    assert np.allclose(embedder.encode_documents(["the fox"], progress=False).vectors[0], expected, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# `longretr models` and the shipped configs


def test_models_command_counts_parameters_and_finds_weights(checkpoints, tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    for name in ("dream", "llada", "diffusion_gemma", "mistral"):
        attention = "causal" if name == "mistral" else "bidirectional"
        write_config(configs, checkpoints[name], name=name, attention=attention)
    # A hub id whose config.json (only) is in the HF cache, one that is not there at all, and a broken config.
    hub = tmp_path / "hub"
    snapshot = hub / "models--Dream-org--Dream-tiny" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((checkpoints["dream"] / "config.json").read_text())
    (hub / "models--Dream-org--Dream-tiny" / "refs").mkdir()
    (hub / "models--Dream-org--Dream-tiny" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    write_config(configs, "Dream-org/Dream-tiny", name="cached-config")
    write_config(configs, "nobody/not-downloaded", name="absent")
    partial = write_dream(tmp_path / "partial")
    (partial / "model-00002-of-00002.safetensors").unlink()
    write_config(configs, partial, name="partial")
    (configs / "broken.toml").write_text("backbone = 'nobody/x'\npooling = 'max'\n")
    (configs / "mistyped.toml").write_text("backbone = 3\n")
    result = CliRunner().invoke(app, ["models", "--configs", str(configs), "--json"])
    assert result.exit_code == 0, result.output
    entries = {Path(e["config"]).stem: e for e in json.loads(result.output)}
    for name in ("dream", "llada", "diffusion_gemma", "mistral"):
        model, _ = load(checkpoints[name], entries[name]["attention"])
        assert entries[name]["parameters"] == sum(p.numel() for p in model.parameters()), name
        assert entries[name]["weights"] == "yes (local folder)"
        assert entries[name]["family"] == (name if name in DIFFUSION else "native")
    assert entries["cached-config"]["parameters"] == entries["dream"]["parameters"]
    assert entries["cached-config"]["weights"] == "config only (weights not in the HF cache)"
    assert entries["absent"]["parameters"] is None and entries["absent"]["weights"] == "no (not in the HF cache)"
    assert entries["partial"]["weights"] == "partial (1/2 shards)"
    assert "pooling must be mean or last" in entries["broken"]["error"]
    assert "backbone must be a string, got 3" in entries["mistyped"]["error"]
    table = CliRunner().invoke(app, ["models", "--configs", str(configs)])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if line.startswith("llada "))
    params = f"{entries['llada']['parameters'] / 1e3:.2f}K"
    assert row.split()[:6] == ["llada", str(checkpoints["llada"]), "llada", params, "64", "bidirectional"]
    for path, error in [(configs / "dream.toml", "not a folder"), (tmp_path / "gone", "no such folder")]:
        refused = CliRunner().invoke(app, ["models", "--configs", str(path)])
        assert refused.exit_code == 2 and f"{path}: {error}" in refused.output, refused.output


def test_models_command_names_each_broken_config_and_keeps_going(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "latin1.toml").write_bytes(b"backbone = 'nobody/\xff'\n")
    (configs / "no-package.toml").write_text("backbone = 'gguf-package:no_such_gguf_pkg'\n")
    (configs / "not-gguf.toml").write_text("backbone = 'gguf-package:json'\n")
    (configs / "gone-folder.toml").write_text(f"backbone = '{tmp_path / 'gone'}'\n")
    result = CliRunner().invoke(app, ["models", "--configs", str(configs), "--json"])
    assert result.exit_code == 0, result.output  # a missing GGUF package or a non-GGUF module raised a traceback
    entries = {Path(e["config"]).stem: e for e in json.loads(result.output)}
    assert entries["latin1"]["error"].startswith(f"{configs / 'latin1.toml'}: ")
    assert entries["no-package"]["weights"] == "no (package no_such_gguf_pkg not installed)"
    assert entries["not-gguf"]["weights"] == "no ('json' is not a GGUF package)"
    # a folder that is not there is not looked up as a hub id (that printed huggingface_hub's repo-id error)
    assert entries["gone-folder"]["weights"] == "no (folder not found)" and entries["gone-folder"]["error"] == ""
    table = CliRunner().invoke(app, ["models", "--configs", str(configs)]).output.splitlines()
    row = next(line for line in table if line.startswith("latin1 "))
    assert row.index("error: ") == table[0].index("weights here")  # last column: it widened the backbone column
    # ./configs/default.toml hides the shipped default for --model default: the shipped row says so
    monkeypatch.chdir(tmp_path)
    (configs / "default.toml").write_text("backbone = 'nobody/x'\n")
    rows = json.loads(CliRunner().invoke(app, ["models", "--json"]).output)
    defaults = [e for e in rows if Path(e["config"]).stem == "default"]
    assert [e["config"] for e in defaults] == ["configs/default.toml", str(REPO_CONFIGS / "default.toml")]
    assert defaults[0]["error"] == "" and "shadowed by configs/default.toml" in defaults[1]["error"]


REQUIRED_CONFIGS = {
    "dream-v0-7b-base": ("Dream-org/Dream-v0-Base-7B", "bidirectional"),
    "dream-v0-7b-instruct": ("Dream-org/Dream-v0-Instruct-7B", "bidirectional"),
    "llada-8b-base": ("GSAI-ML/LLaDA-8B-Base", "bidirectional"),
    "llada-8b-instruct": ("GSAI-ML/LLaDA-8B-Instruct", "bidirectional"),
    "diffusion-gemma": ("google/diffusiongemma-26B-A4B-it", "bidirectional"),
    "qwen2.5-7b-causal-mean": ("Qwen/Qwen2.5-7B", "causal"),
    "qwen2.5-7b-causal-last": ("Qwen/Qwen2.5-7B", "causal"),
    "qwen2.5-7b-bidir": ("Qwen/Qwen2.5-7B", "bidirectional"),
    "mistral-7b-causal-mean": ("mistralai/Mistral-7B-v0.1", "causal"),
    "mistral-7b-causal-last": ("mistralai/Mistral-7B-v0.1", "causal"),
    "mistral-7b-bidir": ("mistralai/Mistral-7B-v0.1", "bidirectional"),
    "llama3-8b-causal-mean": ("meta-llama/Meta-Llama-3-8B", "causal"),
    "llama3-8b-causal-last": ("meta-llama/Meta-Llama-3-8B", "causal"),
    "llama3-8b-bidir": ("meta-llama/Meta-Llama-3-8B", "bidirectional"),
}


def test_shipped_configs_cover_the_backbones():
    for name, (backbone, attention) in REQUIRED_CONFIGS.items():
        cfg = load_config(name)
        assert (cfg.backbone, cfg.attention) == (backbone, attention), name
        assert cfg.pooling == ("last" if name.endswith("-last") else "mean"), name
    assert load_config("default").backbone.startswith("gguf-package:")
    assert len({load_config(n).fingerprint() for n in REQUIRED_CONFIGS}) == len(REQUIRED_CONFIGS)
    assert all((REPO_CONFIGS / f"{n}.toml").is_file() for n in REQUIRED_CONFIGS)


@pytest.mark.parametrize("name", sorted(REQUIRED_CONFIGS))
def test_every_shipped_config_embeds_a_tiny_checkpoint_of_its_format(checkpoints, name):
    """Each shipped config, pointed at the tiny checkpoint in its backbone's original format, loads and embeds
    through the long-context engine with the attention and pooling it declares."""
    from dataclasses import replace

    from longretr.attention import IMPLEMENTATION

    family = {"dream": "dream", "llada": "llada", "diffusion": "diffusion_gemma", "qwen2.5": "qwen2",
              "mistral": "mistral", "llama3": "llama"}[name.split("-")[0]]
    cfg = replace(load_config(name), backbone=str(checkpoints[family]), max_tokens=64, dtype="float32")
    embedder = Embedder(cfg, token_budget=128)
    assert embedder.model.config._attn_implementation == IMPLEMENTATION
    flags = {m.is_causal for m in embedder.model.modules() if hasattr(m, "is_causal") and hasattr(m, "head_dim")}
    assert flags == {cfg.attention == "causal"}
    docs = embedder.encode_documents(SEED_TEXTS, progress=False).vectors
    queries = embedder.encode_queries(["command line"])
    assert docs.shape == (4, H) and np.allclose(np.linalg.norm(docs, axis=1), 1, atol=1e-5)
    assert queries.shape == (1, H) and len({round(float(x), 4) for x in docs @ queries[0]}) == 4


def test_a_converted_folders_tokenizer_is_read_as_is_with_the_same_ids(tiny_gemma, tmp_path):
    """The de-quantised default's tokenizer.json is read by the tokenizers library as is (load_tokenizer(converted=
    True)), not rebuilt by AutoTokenizer: the same ids, offsets and special tokens, here on a tiny Gemma BPE tokenizer
    saved as the conversion saves it."""
    from transformers import AutoTokenizer, GemmaTokenizer

    from longretr.families import family_for, load_tokenizer, read_checkpoint_config

    chars = list("abcdefghijklmnopqrstuvwxyz▁.,;:")
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", *chars, "▁t", "he", "▁the", "in", "▁a"]
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("▁", "a")]
    GemmaTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=merges).save_pretrained(tmp_path)
    raw = read_checkpoint_config(tiny_gemma)
    family = family_for(raw, tiny_gemma)
    rebuilt = AutoTokenizer.from_pretrained(tmp_path)
    read = load_tokenizer(tmp_path, family, raw, converted=True)
    assert type(rebuilt).__name__ == "GemmaTokenizer" and type(read).__name__ == "TokenizersBackend"
    texts = ["the cat in a hat", " the  end.", "<mask> and <bos> in text", "é, ü; 日本", ""]
    for split in (True, False):
        rebuilt.split_special_tokens = read.split_special_tokens = split
        want = rebuilt(texts, add_special_tokens=True, return_offsets_mapping=True)
        got = read(texts, add_special_tokens=True, return_offsets_mapping=True)
        assert got["input_ids"] == want["input_ids"] and got["offset_mapping"] == want["offset_mapping"], split
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id", "unk_token_id", "all_special_ids"):
        assert getattr(read, attr) == getattr(rebuilt, attr), attr
    assert len(read) == len(rebuilt) and read.model_max_length == rebuilt.model_max_length


def test_an_unreachable_hub_id_says_how_to_fail_at_once(monkeypatch):
    """Offline, huggingface_hub retried for ~25 s and the error did not say that HF_HUB_OFFLINE=1 skips that."""
    import transformers.utils

    from longretr.families import read_checkpoint_config

    monkeypatch.setattr(transformers.utils, "cached_file", lambda *a, **kw: None)  # what it returns when unreachable
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(CheckpointError, match="org/model: no config.json .*not downloadable now.*HF_HUB_OFFLINE=1"):
        read_checkpoint_config("org/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match=r"org/model: no config.json in the Hugging Face cache$"):
        read_checkpoint_config("org/model")
