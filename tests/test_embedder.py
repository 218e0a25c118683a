from dataclasses import replace

import numpy as np
import pytest
import torch

from longretr.config import ModelConfig, load_config
from longretr.embedder import Embedder, pack_batches, pool


@pytest.fixture(scope="module")
def embedder(tiny_gemma, tmp_path_factory):
    from tiny_models import write_config

    return Embedder(str(write_config(tmp_path_factory.mktemp("cfg"), tiny_gemma)), token_budget=64)


def test_vectors_are_unit_length_and_deterministic(embedder):
    texts = ["the quick brown fox", "a lazy dog jumps over the archive"]
    a = embedder.encode_documents(texts).vectors
    assert a.shape == (2, 32) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    assert np.allclose(a, embedder.encode_documents(texts).vectors)


def test_padding_and_batch_composition_do_not_change_embeddings(embedder):
    short = "the fox"
    long = " ".join(["the quick brown fox jumps over a lazy dog"] * 4)
    alone = embedder.encode_documents([short]).vectors[0]
    batched = embedder.encode_documents([long, short, long[:20]]).vectors[1]  # padded in a batch
    assert np.allclose(alone, batched, atol=1e-5)


def test_queries_get_the_instruction_documents_do_not(embedder):
    q = embedder.encode_queries(["the fox"])[0]
    d_with = embedder.encode_documents(["Find it; the fox"]).vectors[0]
    d_plain = embedder.encode_documents(["the fox"]).vectors[0]
    assert np.allclose(q, d_with, atol=1e-6) and not np.allclose(q, d_plain, atol=1e-3)


def test_truncation_is_reported(embedder):
    enc = embedder.encode_documents(["fox " * 200, "dog"])
    assert enc.truncated == [True, False] and enc.n_tokens[0] == 64


def test_order_is_restored_across_batches(embedder):
    texts = [" ".join(["fox"] * n) for n in (3, 50, 10, 30, 1)]
    together = embedder.encode_documents(texts).vectors
    one_by_one = np.stack([embedder.encode_documents([t]).vectors[0] for t in texts])
    assert np.allclose(together, one_by_one, atol=1e-5)


def test_pack_batches_respects_budget():
    lengths = [100, 10, 50, 10, 10, 400]
    batches = pack_batches(lengths, 120)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 120 for b in batches)
    assert batches[0] == [5]  # longest first, alone when over budget


def test_mean_pooling_ignores_padding():
    hidden = torch.tensor([[[1.0, 0.0], [3.0, 0.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.allclose(pool(hidden, mask, "mean", False), torch.tensor([[2.0, 0.0]]))
    assert torch.allclose(pool(hidden, mask, "last", False), torch.tensor([[3.0, 0.0]]))


def test_default_config_is_bidirectional_gemma():
    cfg = load_config("default")
    assert cfg.attention == "bidirectional" and cfg.max_tokens == 32768 and cfg.pooling == "mean"
    assert cfg.fingerprint() != load_config("gemma3-270m-causal").fingerprint()


def test_lead_tokens_give_a_long_document_a_second_vector_of_its_lead(embedder):
    cfg = embedder.config
    long, short = "the archive index " + " ".join(["fox jumps"] * 20), "the fox"
    try:
        whole = embedder.encode_documents([long, short]).vectors
        embedder.config = replace(cfg, max_tokens=16)
        head = embedder.encode_documents([long]).vectors[0]
        embedder.config = replace(cfg, lead_tokens=16)
        enc = embedder.encode_documents([short, long])
        queries = embedder.encode_queries(["archive index", "fox jumps", "the fox"])
    finally:
        embedder.config = cfg
    assert not np.allclose(whole[0], head, atol=1e-3)
    assert np.allclose(enc.vectors, whole[::-1], atol=1e-5)  # the whole documents' vectors are unchanged
    assert list(enc.leads) == [1] and np.allclose(enc.leads[1], head, atol=1e-5)  # the short one has no lead
    scores = enc.scores(queries)
    assert np.allclose(scores[:, 0], queries @ whole[1], atol=1e-5)
    assert np.allclose(scores[:, 1], np.maximum(queries @ whole[0], queries @ head), atol=1e-5)
    assert (queries @ head > queries @ whole[0]).any() and (queries @ head < queries @ whole[0]).any()


def test_lead_tokens_change_the_fingerprint_only_when_on(embedder):
    cfg = replace(embedder.config, lead_tokens=0)
    assert replace(cfg, lead_tokens=16).fingerprint() != cfg.fingerprint()
    # Off, the fingerprint is the one from before the setting existed, so those indexes still open.
    pinned = ModelConfig(name="pinned", backbone="org/model", max_tokens=4096, query_instruction="Find it")
    assert pinned.fingerprint() == "c1777e705b9de711"
    # At or above max_tokens it can do nothing, so it is allowed and leaves the fingerprint alone.
    assert replace(cfg, lead_tokens=cfg.max_tokens).fingerprint() == cfg.fingerprint()
    with pytest.raises(ValueError, match="lead_tokens"):
        replace(cfg, lead_tokens=4)
