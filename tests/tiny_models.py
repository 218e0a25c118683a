"""Tiny random-weight models, built and saved in the real on-disk formats by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import Gemma3TextConfig, Gemma3TextModel, PreTrainedTokenizerFast

from longretr.config import ModelConfig

WORDS = (
    "the quick brown fox jumps over a lazy dog while parsing command line arguments and computing "
    "a digest of every file in the archive with json csv regular expressions dates times threads"
).split()


def make_tokenizer(out: Path) -> PreTrainedTokenizerFast:
    # An explicit, sorted vocabulary: a trained WordPiece numbers equally frequent pieces in a different order
    # from run to run, which made the random tiny models (and the tests' rankings) differ between runs.
    chars = sorted({c for w in WORDS for c in w} | set("0123456789-.,;:!?'\"()[]{}/_=#<>@$%&*+"))
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", *chars, *(f"##{c}" for c in chars), *sorted(set(WORDS))]
    pieces = list(dict.fromkeys(pieces))  # "a" is a character and a word
    tok = Tokenizer(models.WordPiece(vocab={p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   bos_token="<bos>", unk_token="<unk>")
    fast.save_pretrained(out)
    return fast


def make_gemma3(out: Path, layer_types: list[str], sliding_window: int = 8, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    tok = make_tokenizer(out)
    config = Gemma3TextConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=len(layer_types),
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, layer_types=layer_types,
        sliding_window=sliding_window, max_position_embeddings=512, pad_token_id=0, bos_token_id=2,
        eos_token_id=1, query_pre_attn_scalar=8,
    )
    model = Gemma3TextModel(config)
    with torch.no_grad():  # random init is near-zero; bigger weights make differences visible
        for p in model.parameters():
            p.normal_(0, 0.2)
    model.save_pretrained(out)
    return out


def write_config(folder: Path, backbone: Path, **overrides) -> Path:
    values = {"name": "tiny", "backbone": str(backbone), "attention": "bidirectional", "pooling": "mean",
              "max_tokens": 64, "dtype": "float32", "query_instruction": "Find it", **overrides}
    path = folder / f"{values['name']}.toml"
    path.write_text(ModelConfig(**values).to_toml())
    return path


def write_corpus(folder: Path, texts: dict[str, str]) -> Path:
    """A corpus folder with one file per (name, text)."""
    for name, text in texts.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def load_script(name: str):
    """A module from the repo's scripts/ folder (scripts are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_lora(out: Path, targets: dict[str, tuple[int, int]], prefix: str, r: int = 4, alpha: int = 8,
               seed: int = 5) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A PEFT LoRA adapter folder with tensors under `base_model.model.<prefix><module>`; returns module -> (A, B)."""
    from peft import LoraConfig  # peft takes a second to import; most tests need no adapter
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=r, lora_alpha=alpha, target_modules=sorted({m.rsplit(".", 1)[-1] for m in targets})) \
        .save_pretrained(out)
    g = torch.Generator().manual_seed(seed)
    tensors, pairs = {}, {}
    for module, (fan_out, fan_in) in targets.items():
        a, b = 0.3 * torch.randn(r, fan_in, generator=g), 0.3 * torch.randn(fan_out, r, generator=g)
        tensors[f"base_model.model.{prefix}{module}.lora_A.weight"] = a
        tensors[f"base_model.model.{prefix}{module}.lora_B.weight"] = b
        pairs[module] = (a, b)
    save_file(tensors, out / "adapter_model.safetensors")
    return pairs
