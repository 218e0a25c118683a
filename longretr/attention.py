"""Long-context attention for any transformers backbone, registered as an attention implementation.

Plain transformers builds an L x L mask per layer type (gigabytes at 32k tokens). Here no mask is
ever built at full length:
- full layers call SDPA with no mask (or a [B,1,1,L] key-padding mask), which runs the
  memory-efficient kernels;
- sliding-window layers are computed in query blocks against only the keys inside the window,
  so memory is O(L * w).
Its registered mask function replaces transformers' mask creation: it returns the [B, L] padding
mask (True = token) untouched, and the attention function applies causality, the window and the
padding itself. Padding is on the right, so real tokens keep their positions and, in causal mode,
never see a padding key.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

IMPLEMENTATION = "longretr"
# Queries per block in sliding-window layers. Each block reads block + 2*window - 2 keys, so smaller blocks
# waste less work on masked-out scores, down to where per-call overhead wins. For Gemma 3 (window 512, bf16,
# CPU) 128 took the least CPU time of 64..512: ~15% less than 512.
QUERY_BLOCK = 128


def long_context_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [B, Hq, L, D]
    key: torch.Tensor,  # [B, Hkv, L, D]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # [B, L], 1 for tokens, 0 for padding
    scaling: float | None = None,
    dropout: float = 0.0,
    sliding_window: int | None = None,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Returns [B, L, Hq, D] (the layout transformers reshapes into the output projection)."""
    if softcap is not None:
        raise NotImplementedError("attention logit soft-capping is not supported by the long-context engine")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError("long-context attention expects a [batch, length] padding mask")
    causal = bool(getattr(module, "is_causal", True))
    dropout = dropout if module.training else 0.0
    keep = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()
    length = query.shape[2]
    if sliding_window is None or sliding_window >= length:
        return _full(query, key, value, keep, causal, scaling, dropout), None
    return _windowed(query, key, value, keep, causal, scaling, dropout, sliding_window), None


def _sdpa(q, k, v, mask, causal, scaling, dropout):
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=scaling, dropout_p=dropout,
        enable_gqa=q.shape[1] != k.shape[1],
    )


def _full(q, k, v, keep, causal, scaling, dropout):
    if keep is None or causal:  # right padding: causal queries never reach a padding key
        out = _sdpa(q, k, v, None, causal, scaling, dropout)
    else:
        out = _sdpa(q, k, v, keep[:, None, None, :], False, scaling, dropout)
    return out.transpose(1, 2).contiguous()  # free on CPU: the flash kernel writes [B, L, H, D]


def _windowed(q, k, v, keep, causal, scaling, dropout, window):
    """Attend where |i - j| < window (and j <= i if causal), one block of queries at a time.

    Written straight into a [B, L, H, D] output (no concatenation, no transposed copy)."""
    batch, heads, length, _ = q.shape
    out = q.new_empty(batch, length, heads, v.shape[-1])
    pad = None if keep is None else _padding_bias(keep, q.dtype)
    for start in range(0, length, QUERY_BLOCK):
        end = min(start + QUERY_BLOCK, length)
        k_start = max(0, start - window + 1)
        k_end = end if causal else min(length, end + window - 1)
        mask = _band(end - start, start - k_start, k_end - k_start, window, causal, q.dtype, q.device,
                     torch.is_inference_mode_enabled())
        if pad is not None:
            mask = mask + pad[:, :, :, k_start:k_end]
        block = _sdpa(q[:, :, start:end], k[:, :, k_start:k_end], v[:, :, k_start:k_end], mask, False, scaling,
                      dropout)
        out[:, start:end] = block.transpose(1, 2)
    return out


@lru_cache(maxsize=64)
def _band(q_len: int, offset: int, k_len: int, window: int, causal: bool, dtype: torch.dtype,
          device: torch.device, inference: bool) -> torch.Tensor:
    """Additive [q_len, k_len] mask of one query block (query i sits at key offset + i).

    All interior blocks share one shape, so a forward builds only a few of these and every layer reuses
    them; built per call, mask arithmetic cost as much as the attention itself. The diagonal is always
    allowed, so no row is fully masked (no NaN). `inference` is part of the key: a mask made under
    inference mode cannot be saved for a later backward pass (training after encoding)."""
    qi = torch.arange(offset, offset + q_len, device=device)[:, None]
    kj = torch.arange(k_len, device=device)[None, :]
    blocked = (qi - kj).abs() >= window
    if causal:
        blocked |= kj > qi
    return torch.zeros(q_len, k_len, dtype=dtype, device=device).masked_fill_(blocked, float("-inf"))


def _padding_bias(keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, 1, 1, L] additive key-padding mask. Finite, so a padding query whose whole window is padding
    gets a finite (ignored) output instead of NaN that would spread through later layers."""
    bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    return bias.masked_fill_(~keep, torch.finfo(dtype).min / 2)[:, None, None, :]


def padding_mask_only(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None, **kwargs):
    """transformers' mask hook: hand the [B, L] padding mask through instead of building L x L."""
    if attention_mask is not None and attention_mask.shape[-1] != kv_length:
        raise ValueError("long-context attention does not support caches or prefixes")
    return attention_mask


AttentionInterface.register(IMPLEMENTATION, long_context_attention)
AttentionMaskInterface.register(IMPLEMENTATION, padding_mask_only)
