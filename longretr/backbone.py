"""Load a backbone (weights + tokenizer) by hub id, local folder or GGUF package, with the
attention mode the config asks for."""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .config import ModelConfig, longretr_home

transformers.utils.logging.set_verbosity_error()  # per-load progress bars and notices are noise here
transformers.utils.logging.disable_progress_bar()

GGUF_PREFIX = "gguf-package:"
GEMMA_NOTICE = Path(__file__).with_name("GEMMA_NOTICE.txt")


def resolve_backbone(spec: str) -> Path | str:
    """A local folder to load from; GGUF packages are de-quantized once into $LONGRETR_HOME."""
    if spec.startswith(GGUF_PREFIX):
        return _cached_gguf_package(spec[len(GGUF_PREFIX):])
    return spec  # hub id or local path: transformers resolves both


def _cached_gguf_package(module_name: str) -> Path:
    pkg = importlib.import_module(module_name)
    target = longretr_home() / "models" / f"{module_name}-{pkg.EXPECTED_SHA256[:12]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"longretr: de-quantizing {pkg.MODEL_NAME} once into {target} ...", flush=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        gguf = pkg.assemble(Path(tmp) / pkg.MODEL_NAME)
        from transformers import AutoModelForCausalLM

        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        lm = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
        # Keep only the text encoder (no LM head), as a plain safetensors checkpoint.
        base = lm.model
        config = base.config
        if hasattr(config, "quantization_config"):  # weights below are plain float32 now
            del config.quantization_config
        model = AutoModel.from_config(config)
        model.load_state_dict(base.state_dict())
        out = Path(tmp) / "out"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        shutil.copy(GEMMA_NOTICE, out / "GEMMA_NOTICE.txt")
        if target.exists():  # a concurrent conversion won the race
            return target
        out.rename(target)  # atomic: a half-written cache is never visible
    return target


def notice_file(cfg: ModelConfig) -> Path | None:
    """Licence notice that must travel with anything derived from these weights."""
    source = resolve_backbone(cfg.backbone) if cfg.backbone.startswith(GGUF_PREFIX) else Path(cfg.backbone)
    for name in ("GEMMA_NOTICE.txt", "NOTICE"):
        if (Path(source) / name).is_file():
            return Path(source) / name
    return None


def load_backbone(
    cfg: ModelConfig, dtype: torch.dtype, device: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    source = resolve_backbone(cfg.backbone)
    hf_config = AutoConfig.from_pretrained(source, **_attention_kwargs(source, cfg))
    from .attention import IMPLEMENTATION  # registers the long-context attention

    hf_config._attn_implementation = IMPLEMENTATION
    model = AutoModel.from_pretrained(source, config=hf_config, dtype=dtype)
    set_causal(model, cfg.attention == "causal")
    if cfg.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.adapter).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def _attention_kwargs(source: Path | str, cfg: ModelConfig) -> dict:
    # Gemma 3 has a native switch; it also makes its sliding window symmetric (w/2 each side).
    raw = AutoConfig.from_pretrained(source)
    if hasattr(raw, "use_bidirectional_attention"):
        return {"use_bidirectional_attention": cfg.attention == "bidirectional"}
    return {}


def set_causal(model: torch.nn.Module, causal: bool) -> None:
    """Every attention module reads `is_causal`; the long-context attention honours it."""
    for module in model.modules():
        if hasattr(module, "is_causal") and hasattr(module, "head_dim"):
            module.is_causal = causal
