"""The embedder: backbone -> final-layer token states -> pooling -> L2 normalisation.

`encode_queries` and `encode_documents` are the one entry point the rest of longretr uses.
Documents are tokenised once, sorted by length and packed into batches up to a token budget, so
padding stays small and a 32k-token document is one unpadded forward pass.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import load_backbone, notice_file
from .config import ModelConfig, load_config


@dataclass
class EncodedDocuments:
    vectors: np.ndarray  # [N, dim] float32
    n_tokens: list[int]  # tokens actually encoded (after truncation)
    truncated: list[bool]
    padding_waste: float  # padded positions / all positions in the forward passes
    seconds: float


def pick_device_dtype(requested: str = "auto", device: str | None = None) -> tuple[str, torch.dtype]:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if requested != "auto":
        return device, getattr(torch, requested)
    if device.startswith("cuda"):
        return device, torch.bfloat16
    # bf16 is only fast on CPUs with native bf16 units (AVX512-BF16 / AMX); otherwise fp32.
    return device, torch.bfloat16 if _cpu_has_native_bf16() else torch.float32


def _cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pack_batches(lengths: list[int], token_budget: int) -> list[list[int]]:
    """Indices grouped so that (batch size x longest member) <= token_budget, longest first."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1) * longest > token_budget:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class Embedder:
    def __init__(
        self,
        config: ModelConfig | str = "default",
        device: str | None = None,
        dtype: str | None = None,
        token_budget: int = 16384,
    ) -> None:
        self.config = load_config(config) if isinstance(config, str) else config
        self.device, self.dtype = pick_device_dtype(dtype or self.config.dtype, device)
        self.model, self.tokenizer = load_backbone(self.config, self.dtype, self.device)
        self.token_budget = token_budget
        self.dim = int(self.model.config.hidden_size)

    @property
    def notice(self) -> Path | None:
        return notice_file(self.config)

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        limit = self.config.max_tokens
        return [x[:limit] for x in ids], [len(x) > limit for x in ids]

    def encode_queries(self, queries: list[str]) -> np.ndarray:
        ids, _ = self.tokenize([self.config.format_query(q) for q in queries])
        return self._encode_ids(ids, progress=False)[0]

    def encode_documents(self, texts: list[str], progress: bool = True) -> EncodedDocuments:
        start = time.perf_counter()
        ids, truncated = self.tokenize(texts)
        vectors, waste = self._encode_ids(ids, progress=progress)
        return EncodedDocuments(vectors, [len(x) for x in ids], truncated, waste, time.perf_counter() - start)

    def _encode_ids(self, ids: list[list[int]], progress: bool) -> tuple[np.ndarray, float]:
        out = np.zeros((len(ids), self.dim), dtype=np.float32)
        if not ids:
            return out, 0.0
        lengths = [len(x) for x in ids]
        batches = pack_batches(lengths, self.token_budget)
        real = sum(lengths)
        padded = sum(len(b) * lengths[b[0]] for b in batches)
        bar = tqdm(total=real, unit="tok", unit_scale=True, disable=not progress, desc="encoding",
                   postfix={"docs": f"0/{len(ids)}"}, mininterval=1.0)
        done = 0
        for batch in batches:
            out[batch] = self._forward_with_split([ids[i] for i in batch])
            done += len(batch)
            bar.set_postfix(docs=f"{done}/{len(ids)}", refresh=False)
            bar.update(sum(lengths[i] for i in batch))
        bar.close()
        return out, 1.0 - real / padded

    def _forward_with_split(self, batch: list[list[int]]) -> np.ndarray:
        try:
            return self._forward(batch)
        except torch.OutOfMemoryError:
            if len(batch) == 1:
                raise
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            half = len(batch) // 2
            return np.concatenate([self._forward_with_split(batch[:half]), self._forward_with_split(batch[half:])])

    @torch.inference_mode()
    def _forward(self, batch: list[list[int]]) -> np.ndarray:
        longest = max(len(x) for x in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(batch), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, x in enumerate(batch):  # right padding: positions of real tokens never move
            input_ids[row, : len(x)] = torch.tensor(x)
            mask[row, : len(x)] = 1
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        return pool(hidden, mask, self.config.pooling, self.config.normalize).float().cpu().numpy()


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str, normalize: bool) -> torch.Tensor:
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        vec = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1)
    elif how == "last":
        last = mask.sum(1) - 1
        vec = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    else:
        raise ValueError(f"unknown pooling {how!r}")
    return torch.nn.functional.normalize(vec, dim=-1) if normalize else vec
