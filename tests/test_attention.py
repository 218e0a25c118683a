"""The long-context attention must compute exactly what plain transformers computes."""

import pytest
import torch
from tiny_models import make_gemma3
from transformers import AutoConfig, AutoModel

from longretr import attention
from longretr.attention import IMPLEMENTATION
from longretr.backbone import set_causal

LAYOUTS = {
    "full": ["full_attention"] * 2,
    "sliding": ["sliding_attention"] * 2,
    "mixed": ["sliding_attention", "full_attention", "sliding_attention"],
}


def _pair(path, bidirectional):
    ref_cfg = AutoConfig.from_pretrained(path, use_bidirectional_attention=bidirectional)
    ref = AutoModel.from_pretrained(path, config=ref_cfg, attn_implementation="eager").eval()
    cfg = AutoConfig.from_pretrained(path, use_bidirectional_attention=bidirectional)
    cfg._attn_implementation = IMPLEMENTATION
    ours = AutoModel.from_pretrained(path, config=cfg).eval()
    set_causal(ours, not bidirectional)
    return ref, ours


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("kernel", ["sdpa", "matmul"])
def test_matches_transformers(tmp_path, layout, bidirectional, padded, kernel, monkeypatch):
    """Both ways of computing bidirectional layers: SDPA, and the blocked matmuls that CPUs with a slow SDPA kernel get
    when encoding (forced here at every length: 300 tokens are four 64-query blocks and part of a fifth)."""
    if kernel == "matmul":
        monkeypatch.setattr(attention, "MATMUL_MIN_LENGTH", 1)
        monkeypatch.setattr(attention, "_matmul_is_faster", lambda *a: True)
    path = make_gemma3(tmp_path, LAYOUTS[layout], sliding_window=6)
    ref, ours = _pair(path, bidirectional)
    torch.manual_seed(1)
    ids = torch.randint(4, 100, (3, 300))  # > one 128-query block of the windowed path
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 170:] = 0
        mask[2, 9:] = 0
        ids[mask == 0] = 0
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        b = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    assert torch.allclose(a[real], b[real], atol=1e-4, rtol=1e-4), (a[real] - b[real]).abs().max()


@pytest.mark.parametrize("bidirectional", [True, False])
def test_later_tokens_change_earlier_states_only_when_bidirectional(tmp_path, bidirectional):
    path = make_gemma3(tmp_path, LAYOUTS["mixed"], sliding_window=6)
    _, model = _pair(path, bidirectional)
    ids = torch.randint(4, 100, (1, 30))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 100 + 4
    with torch.no_grad():
        a = model(input_ids=ids).last_hidden_state[0, 0]
        b = model(input_ids=changed).last_hidden_state[0, 0]
    assert (not torch.allclose(a, b, atol=1e-6)) == bidirectional


def test_short_inputs_never_consult_the_kernel_timing(embedder, monkeypatch):
    """Which kernel runs long inputs depends on a timing; a query's or short document's vector must not, so below
    MATMUL_MIN_LENGTH tokens SDPA runs without asking (a CI run once flipped a score's sixth decimal this way)."""
    def asked(*args):
        raise AssertionError("the kernel timing was consulted for a short input")

    monkeypatch.setattr(attention, "_matmul_is_faster", asked)
    embedder.encode_queries(["lazy dog", "json csv files and more words than the tiny model's window"])
    embedder.encode_documents(["the quick brown fox " * 60], progress=False)
