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

import time
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
    if _matmul_is_faster_for(q, k, causal):
        return _matmul_attention(q, k, v, keep, scaling)
    if keep is None or causal:  # right padding: causal queries never reach a padding key
        out = _sdpa(q, k, v, None, causal, scaling, dropout)
    else:
        out = _sdpa(q, k, v, keep[:, None, None, :], False, scaling, dropout)
    return out.transpose(1, 2).contiguous()  # free on CPU: the flash kernel writes [B, L, H, D]


def _windowed(q, k, v, keep, causal, scaling, dropout, window):
    """Attend where |i - j| < window (and j <= i if causal)."""
    if _matmul_is_faster_for(q, k, causal):
        return _matmul_attention(q, k, v, keep, scaling, window)
    return _sdpa_windowed(q, k, v, keep, causal, scaling, dropout, window)


def _sdpa_windowed(q, k, v, keep, causal, scaling, dropout, window):
    """SDPA one block of queries at a time, written straight into a [B, L, H, D] output (no concatenation, no
    transposed copy)."""
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


# Bidirectional attention as plain matmuls over blocks of 64 queries (scores in fp32, each block's small enough to stay
# in cache), for encoding on CPUs whose SDPA kernel is slow: on the 2-core AMD EPYC with AVX512-BF16 and no AMX, bf16
# SDPA ran at 185 GFLOP/s against 831 for a matmul; this ran a 32k full layer at about 300 and a 32k sliding-window
# layer 3.4x faster than SDPA with its band mask (by hand, 2026-12-07). Where SDPA is the faster (AMX, CUDA),
# _matmul_is_faster says so once per process and SDPA stays. Never while training: it keeps no memory-efficient
# backward.
MATMUL_BLOCK = 64
# Shorter inputs (queries, the tests' tiny models) take SDPA without measuring anything: the choice depends on timing,
# and a query's vector should not depend on which kernel a process happened to pick.
MATMUL_MIN_LENGTH = 1024


def _matmul_attention(q, k, v, keep, scaling, window: int | None = None):
    """softmax(q k^T * scale + band + padding) v, one block of queries at a time; [B, L, Hq, D] out."""
    batch, heads, length, dim = q.shape
    groups = heads // k.shape[1]
    scale = dim ** -0.5 if scaling is None else scaling
    out = q.new_empty(batch, length, heads, v.shape[-1])
    pad = None if keep is None else _padding_bias(keep, torch.float32)[:, 0]  # [B, 1, L]
    for start in range(0, length, MATMUL_BLOCK):
        end = min(start + MATMUL_BLOCK, length)
        k_start, k_end = (0, length) if window is None else (max(0, start - window + 1), min(length, end + window - 1))
        bias = None if window is None else _band(end - start, start - k_start, k_end - k_start, window, False,
                                                 torch.float32, q.device, torch.is_inference_mode_enabled())
        for b in range(batch):
            for h in range(k.shape[1]):
                queries = q[b, h * groups:(h + 1) * groups, start:end].reshape(-1, dim)
                scores = torch.mm(queries, k[b, h, k_start:k_end].t()).float().mul_(scale).view(groups, end - start, -1)
                if bias is not None:
                    scores += bias
                if pad is not None:
                    scores += pad[b, :, k_start:k_end]
                weights = torch.softmax(scores, dim=-1).to(q.dtype).view(-1, k_end - k_start)
                out[b, start:end, h * groups:(h + 1) * groups] = \
                    torch.mm(weights, v[b, h, k_start:k_end]).view(groups, end - start, -1).transpose(0, 1)
    return out


def _matmul_is_faster_for(q: torch.Tensor, k: torch.Tensor, causal: bool) -> bool:
    if causal or torch.is_grad_enabled() or q.shape[2] < MATMUL_MIN_LENGTH:
        return False
    return _matmul_is_faster(q.dtype, q.device, q.shape[-1], q.shape[1] // k.shape[1])


@lru_cache(maxsize=16)
def _matmul_is_faster(dtype: torch.dtype, device: torch.device, dim: int, groups: int) -> bool:
    """Times both on a 2,048-token problem of this shape (a full layer and a 512-token window), once per process; the
    matmuls only if clearly faster. Only on CPU: CUDA keeps SDPA's flash kernels (not measured against these)."""
    if device.type != "cpu":
        return False
    q = torch.randn(1, groups, 2048, dim, dtype=dtype)
    k, v = torch.randn(1, 1, 2048, dim, dtype=dtype), torch.randn(1, 1, 2048, dim, dtype=dtype)

    def best(run) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        sdpa = best(lambda: (_sdpa(q, k, v, None, False, None, 0.0), _sdpa_windowed(q, k, v, None, False, None, 0.0,
                                                                                     512)))
        matmul = best(lambda: (_matmul_attention(q, k, v, None, None), _matmul_attention(q, k, v, None, None, 512)))
    return matmul < 0.8 * sdpa


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
