"""Load a backbone (weights + tokenizer) by hub id, local folder or GGUF package, with the attention mode the config
asks for. Checkpoints in other on-disk formats (Dream, LLaDA, ...) are mapped onto native modules by families.py."""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from .config import GGUF_PREFIX, ModelConfig, gguf_cache_folder
from .families import REMOTE_PREFIX, CheckpointError, Family, family_for, load_tokenizer, read_checkpoint_config

transformers.utils.logging.set_verbosity_error()  # per-load progress bars and notices are noise here
transformers.utils.logging.disable_progress_bar()

GEMMA_NOTICE = Path(__file__).with_name("GEMMA_NOTICE.txt")


def resolve_backbone(spec: str) -> Path | str:
    """A local folder to load from; GGUF packages are de-quantized once into $LONGRETR_HOME."""
    if spec.startswith(GGUF_PREFIX):
        return _cached_gguf_package(spec[len(GGUF_PREFIX):])
    return spec.removeprefix(REMOTE_PREFIX)  # hub id or local path: transformers resolves both


def _cached_gguf_package(module_name: str) -> Path:
    pkg = importlib.import_module(module_name)
    target = gguf_cache_folder(module_name)
    if (target / "config.json").is_file():
        return target
    print(f"longretr: de-quantizing {pkg.MODEL_NAME} once into {target} ...", flush=True)
    try:
        return _dequantize(pkg, target)
    except (OSError, SafetensorError) as e:  # a full disk (safetensors has its own type), an unwritable
        # $LONGRETR_HOME: as a ValueError, which every command reports in one line
        reason = getattr(e, "strerror", None) or e
        raise ValueError(f"{target}: cannot de-quantize {pkg.MODEL_NAME} into this cache ({reason}); nothing was "
                         "cached: free space there, or set LONGRETR_HOME to a folder with room") from e


def _dequantize(pkg, target: Path) -> Path:
    """Convert in a temp folder beside `target` and rename it into place: `target` appears complete or not at all,
    and a failed conversion's temp folder is removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_conversions(target)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent,
                                     ignore_cleanup_errors=True) as tmp:
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


def _remove_dead_conversions(target: Path) -> None:
    """A conversion that was killed (kill -9, a power cut) leaves its temp folder, over a gigabyte for the default
    model: remove those whose process is gone. A live one may be converting beside us, so its folder stays."""
    for tmp in target.parent.glob(f".{target.name}.*.*"):
        pid = tmp.name.removeprefix(f".{target.name}.").split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def notice_file(cfg: ModelConfig) -> Path | None:
    """Licence notice that must travel with anything derived from these weights."""
    spec = cfg.backbone
    source = resolve_backbone(spec) if spec.startswith(GGUF_PREFIX) else Path(spec.removeprefix(REMOTE_PREFIX))
    for name in ("GEMMA_NOTICE.txt", "NOTICE"):
        if (Path(source) / name).is_file():
            return Path(source) / name
    return None


def load_backbone(
    cfg: ModelConfig, dtype: torch.dtype, device: str
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The final-layer encoder (no LM head) and its tokenizer, on the long-context attention.

    The tokenizer pads on the right and reads special-token strings inside text as plain text, so a document can
    never inject a mask or pad token id; left-padded input given to the model is realigned (see right_align_padding).
    """
    causal = cfg.attention == "causal"
    if cfg.backbone.startswith(REMOTE_PREFIX):
        with _naming(cfg, cfg.backbone):
            model, tokenizer = _load_remote_code(cfg.backbone[len(REMOTE_PREFIX):], dtype)
        family = Family()
    else:
        source = resolve_backbone(cfg.backbone)
        raw = read_checkpoint_config(source)
        family = family_for(raw, source)
        hf_config = family.native_config(raw, bidirectional=not causal)
        from .attention import IMPLEMENTATION  # registers the long-context attention

        for sub in {id(c): c for c in (hf_config, hf_config.get_text_config())}.values():
            sub._attn_implementation = IMPLEMENTATION
        with _naming(cfg, source):
            model = family.load(source, hf_config, dtype)
            tokenizer = load_tokenizer(source, family, raw, converted=cfg.backbone.startswith(GGUF_PREFIX))
    if cfg.adapters:
        from .adapters import merge_adapter

        model = merge_adapter(model, cfg.adapters, family, cfg.adapter_weights)
    if cfg.backbone.startswith(REMOTE_PREFIX):
        model = LastHiddenState(model)
    set_causal(model, causal)
    tokenizer.padding_side = "right"
    tokenizer.split_special_tokens = True
    right_align_padding(model)
    return model.to(device).eval(), tokenizer


@contextmanager
def _naming(cfg: ModelConfig, source: object) -> Iterator[None]:
    """Missing, truncated or mismatched weight or tokenizer files: transformers, safetensors and torch each raise
    their own types (OSError, SafetensorError, RuntimeError); as a ValueError naming the model, every command
    reports it as bad input instead of a traceback."""
    try:
        yield
    except (MemoryError, CheckpointError):  # CheckpointError names the checkpoint and the problem already
        raise
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"model {cfg.name!r}: cannot load its weights or tokenizer from {source} "
                         f"({type(e).__name__}: {str(e).strip()[:500]})") from e


def _load_remote_code(source: str, dtype: torch.dtype) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """Only when the config asks for it (backbone = "remote-code:..."): the checkpoint's own code runs, with its own
    attention and padding handling; longretr's long-context engine and masking do not apply."""
    model = AutoModel.from_pretrained(source, trust_remote_code=True, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


class LastHiddenState(torch.nn.Module):
    """Custom-code models tend to return logits only; the embedder needs the final-layer states."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, input_ids=None, attention_mask=None, **kwargs) -> BaseModelOutput:
        out = self.inner(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, **kwargs)
        last = getattr(out, "last_hidden_state", None)
        return BaseModelOutput(last_hidden_state=last if last is not None else out.hidden_states[-1])


def set_causal(model: torch.nn.Module, causal: bool) -> None:
    """Every attention module reads `is_causal`; the long-context attention honours it."""
    for module in model.modules():
        if hasattr(module, "is_causal") and hasattr(module, "head_dim"):
            module.is_causal = causal


def right_align_padding(model: torch.nn.Module) -> None:
    """Make left padding give the same states as right padding.

    longretr pads on the right, so real tokens keep positions 0..n-1 and, in causal mode, never see a padding key.
    Input padded on the left (the LLM2Vec / DiffEmbed convention) is rolled to the right before the forward pass and
    the states rolled back after it; rows that are not one contiguous run of tokens are refused.
    """
    pending: list[torch.Tensor | None] = []

    def before(module, args, kwargs):
        args = list(args)
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
        if mask is None or mask.dim() != 2 or _right_padded(mask):
            pending.append(None)
            return None
        length = mask.shape[1]
        lead = (mask == 0).long().cumprod(1).sum(1)  # leading padding per row
        index = (torch.arange(length, device=mask.device)[None, :] + lead[:, None]) % length
        if not _right_padded(mask.gather(1, index)):
            raise ValueError("attention_mask rows must each be one contiguous run of tokens (left or right padding)")
        for pos in range(min(2, len(args))):  # positional input_ids, attention_mask
            if args[pos] is not None:
                args[pos] = _roll(args[pos], index)
        for name in ("input_ids", "attention_mask", "position_ids", "inputs_embeds", "token_type_ids"):
            if kwargs.get(name) is not None:
                kwargs[name] = _roll(kwargs[name], index)
        pending.append((index, lead))
        return tuple(args), kwargs

    def after(module, args, kwargs, output):
        state = pending.pop() if pending else None
        if state is None:
            return output
        _, lead = state
        length = output.last_hidden_state.shape[1]
        back = (torch.arange(length, device=lead.device)[None, :] - lead[:, None]) % length
        output.last_hidden_state = _roll(output.last_hidden_state, back)
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(_roll(h, back) for h in output.hidden_states)
        return output

    model.register_forward_pre_hook(before, with_kwargs=True)
    model.register_forward_hook(after, with_kwargs=True)


def _right_padded(mask: torch.Tensor) -> bool:
    keep = mask.bool()
    return bool((keep[:, 1:] <= keep[:, :-1]).all())


def _roll(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather along the sequence axis (dim 1) with a [B, L] index."""
    if x.dim() == 2:
        return x.gather(1, index.to(x.device))
    return x.gather(1, index.to(x.device)[..., None].expand(-1, -1, *x.shape[2:]))
