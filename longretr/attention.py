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

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

IMPLEMENTATION = "longretr"


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
    if softcap is not None:
        raise NotImplementedError("attention logit soft-capping is not supported by the long-context engine")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError("long-context attention expects a [batch, length] padding mask")
    causal = bool(getattr(module, "is_causal", True))
    dropout = dropout if module.training else 0.0
    keep = None if attention_mask is None or bool(attention_mask.all()) else attention_mask.bool()
    length = query.shape[2]
    if sliding_window is None or sliding_window >= length:
        out = _full(query, key, value, keep, causal, scaling, dropout)
    else:
        out = _windowed(query, key, value, keep, causal, scaling, dropout, sliding_window)
    return out.transpose(1, 2).contiguous(), None


def _sdpa(q, k, v, mask, causal, scaling, dropout):
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=causal, scale=scaling, dropout_p=dropout,
        enable_gqa=q.shape[1] != k.shape[1],
    )


def _full(q, k, v, keep, causal, scaling, dropout):
    if keep is None or causal:  # right padding: causal queries never reach a padding key
        return _sdpa(q, k, v, None, causal, scaling, dropout)
    return _sdpa(q, k, v, keep[:, None, None, :], False, scaling, dropout)


def _windowed(q, k, v, keep, causal, scaling, dropout, window):
    """Attend where |i - j| < window (and j <= i if causal), one block of queries at a time."""
    length = q.shape[2]
    block = max(window, 128)
    outs = []
    for start in range(0, length, block):
        end = min(start + block, length)
        k_start = max(0, start - window + 1)
        k_end = end if causal else min(length, end + window - 1)
        qi = torch.arange(start, end, device=q.device)[:, None]
        kj = torch.arange(k_start, k_end, device=q.device)[None, :]
        allowed = (qi - kj).abs() < window
        if causal:
            allowed &= kj <= qi
        mask = allowed[None, None]
        if keep is not None:
            mask = mask & keep[:, None, None, k_start:k_end]
        outs.append(_sdpa(q[:, :, start:end], k[:, :, k_start:k_end], v[:, :, k_start:k_end],
                          mask, False, scaling, dropout))
    return torch.cat(outs, dim=2)


def padding_mask_only(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None, **kwargs):
    """transformers' mask hook: hand the [B, L] padding mask through instead of building L x L."""
    if attention_mask is not None and attention_mask.shape[-1] != kv_length:
        raise ValueError("long-context attention does not support caches or prefixes")
    return attention_mask


AttentionInterface.register(IMPLEMENTATION, long_context_attention)
AttentionMaskInterface.register(IMPLEMENTATION, padding_mask_only)
