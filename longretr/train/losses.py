"""Training objectives."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(queries: torch.Tensor, candidates: torch.Tensor, scale: float = 50.0,
             owners: torch.Tensor | None = None) -> torch.Tensor:
    """InfoNCE on cosine similarity x scale (50 = temperature 0.02). Candidate i is query i's positive;
    every other candidate (in-batch positives and all hard negatives) is a negative. With `owners`, `candidates`
    are vectors and owners[v] the candidate that vector v belongs to: a candidate scores its best vector's cosine,
    as dense search scores a document with span vectors."""
    sims = queries @ candidates.T
    if owners is not None:
        n = int(owners.max()) + 1
        sims = sims.new_full((len(queries), n), -2.0).scatter_reduce(1, owners.expand(len(queries), -1), sims, "amax")
    return F.cross_entropy(sims * scale, torch.arange(len(queries), device=queries.device))


def distillation(student_q: torch.Tensor, student_c: torch.Tensor, teacher_q: torch.Tensor,
                 teacher_c: torch.Tensor, scale: float = 50.0, teacher_temperature: float = 0.05) -> torch.Tensor:
    """KL(teacher || student) over each query's candidate distribution."""
    student = F.log_softmax(student_q @ student_c.T * scale, dim=-1)
    teacher = F.softmax(teacher_q @ teacher_c.T / teacher_temperature, dim=-1)
    return F.kl_div(student, teacher, reduction="batchmean")


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_id: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked-diffusion corruption: per sequence t ~ U(0,1), each real token (not the first, which is
    BOS) is replaced by the mask token with probability t. Returns (noisy ids, masked positions, t)."""
    b, n = input_ids.shape
    t = torch.rand(b, 1, generator=generator).clamp(min=1e-3).to(input_ids.device)
    draw = torch.rand(b, n, generator=generator).to(input_ids.device)
    masked = (draw < t) & attention_mask.bool()
    masked[:, 0] = False
    return input_ids.masked_fill(masked, mask_id), masked, t.squeeze(1)


def diffusion_loss(hidden: torch.Tensor, output_embeddings: torch.Tensor, targets: torch.Tensor,
                   masked: torch.Tensor, t: torch.Tensor, attention_mask: torch.Tensor,
                   shift: bool = True) -> torch.Tensor:
    """Cross-entropy on masked positions weighted by 1/t, normalised by the number of tokens that could be masked
    (real tokens but the first), so padding a batch does not scale the loss down.
    With `shift` (Dream-style, for AR-initialised models) the state at i-1 predicts token i, as the
    AR checkpoint's head was trained to."""
    maskable = attention_mask[:, 1:].sum().clamp(min=1)
    if shift:
        hidden, targets, masked = hidden[:, :-1], targets[:, 1:], masked[:, 1:]
    rows, cols = masked.nonzero(as_tuple=True)
    if len(rows) == 0:
        return hidden.sum() * 0.0
    logits = hidden[rows, cols].float() @ output_embeddings.float().T
    ce = F.cross_entropy(logits, targets[rows, cols], reduction="none")
    return (ce / t[rows]).sum() / maskable
