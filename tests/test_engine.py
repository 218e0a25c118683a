"""The encoding engine around the attention: OOM split-and-retry, token-budget packing, dtype/device
choice, token-wise chunking, progress reporting. Tiny random-weight models only."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_models import WORDS, write_config

from longretr import embedder as embedder_module
from longretr.embedder import Embedder, chunk_token_wise, pack_batches, pick_device_dtype

# Token lengths of the demo corpus (300 stdlib pydoc pages, Gemma 3 tokenizer) are close to
# log-normal: median 2.8k, 5th-95th percentile 207-18k, max 83k. Fitted parameters of log(length):
DEMO_LOG_MEAN, DEMO_LOG_STD = 7.76, 1.29


@pytest.fixture(scope="module")
def embedder(tiny_gemma, tmp_path_factory):
    # A budget large enough that every test batch below is one forward pass unless it is split.
    return Embedder(str(write_config(tmp_path_factory.mktemp("cfg"), tiny_gemma)), token_budget=4096)


# Lengths within 10% of each other, so packing puts all seven in one batch (unless it is split).
TEXTS = [" ".join(["fox"] * n) for n in (43, 40, 46, 41, 45, 42, 44)]


def _refuse_batches_above(monkeypatch, model, max_rows):
    """Make the model's forward raise OutOfMemoryError for batches of more than `max_rows` rows."""
    real_forward = model.forward
    calls = []

    def forward(*args, input_ids, **kwargs):
        rows = input_ids.shape[0]
        calls.append(rows)
        if rows > max_rows:
            raise torch.OutOfMemoryError(f"test: {rows} rows > {max_rows}")
        return real_forward(*args, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    return calls


def test_out_of_memory_batch_is_split_and_retried(embedder, monkeypatch):
    unsplit = embedder.encode_documents(TEXTS, progress=False).vectors
    one_by_one = np.stack([embedder.encode_documents([t], progress=False).vectors[0] for t in TEXTS])
    calls = _refuse_batches_above(monkeypatch, embedder.model, 2)
    split = embedder.encode_documents(TEXTS, progress=False).vectors

    assert calls[0] == len(TEXTS)  # tried whole first, then halves of halves
    assert sum(rows for rows in calls if rows <= 2) == len(TEXTS)  # every document encoded exactly once
    assert any(rows > 2 for rows in calls[1:])  # the halves were retried too (7 -> 3 + 4 -> ...)
    assert np.allclose(split, unsplit, atol=1e-5)
    assert np.allclose(split, one_by_one, atol=1e-5)  # input order restored after the split


def test_out_of_memory_on_one_document_names_it(embedder, monkeypatch):
    _refuse_batches_above(monkeypatch, embedder.model, 0)
    with pytest.raises(torch.OutOfMemoryError, match="one document of 41 tokens"):
        embedder.encode_documents([TEXTS[1]], progress=False)


def test_padding_waste_of_packing_on_a_realistic_length_mix():
    rng = np.random.default_rng(0)
    for n_docs in (300, 60, 8):
        lengths = np.clip(rng.lognormal(DEMO_LOG_MEAN, DEMO_LOG_STD, n_docs).astype(int), 16, 32768).tolist()
        batches = pack_batches(lengths, 16384)
        waste = _waste(lengths, batches)
        print(f"{n_docs} docs, {sum(lengths)} tokens, {len(batches)} batches: padding waste {waste:.2%}")
        assert sorted(i for b in batches for i in b) == list(range(n_docs))
        assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 16384 for b in batches)
        assert waste < 0.10, f"padding waste {waste:.1%} on {n_docs} documents"


def test_packing_bounds_waste_where_the_budget_alone_would_not():
    lengths = [256, 512, 1024, 2048]  # one batch by budget alone: 53% padding
    assert _waste(lengths, pack_batches(lengths, 16384)) == 0.0
    rng = np.random.default_rng(1)
    for _ in range(200):
        lengths = rng.integers(1, 4000, rng.integers(1, 50)).tolist()
        batches = pack_batches(lengths, int(rng.integers(64, 20000)))
        assert _waste(lengths, batches) <= 0.10 + 1e-9
    queries = rng.integers(5, 40, 1000).tolist()  # short texts still share large batches
    assert len(pack_batches(queries, 16384)) <= 20


def _waste(lengths, batches):
    return 1 - sum(lengths) / sum(len(b) * max(lengths[i] for i in b) for b in batches)


def test_reported_padding_waste_is_the_padding_of_the_forward_passes(embedder):
    texts = [" ".join(["fox"] * n) for n in (29, 9, 27)]  # 30, 10, 28 tokens with <bos>
    small = Embedder(embedder.config, token_budget=60)  # batches [30, 28] and [10]
    enc = small.encode_documents(texts, progress=False)
    assert enc.n_tokens == [30, 10, 28]
    assert enc.padding_waste == pytest.approx(1 - 68 / (2 * 30 + 10))


def test_progress_bar_shows_documents_tokens_per_second_and_padding(embedder, capsys):
    embedder.encode_documents(TEXTS, progress=True)
    err = capsys.readouterr().err
    assert f"docs={len(TEXTS)}/{len(TEXTS)}" in err
    assert "tok/s" in err and "pad=" in err


class _Bar:
    """Records a progress bar's updates and how many decoder layers had run at each."""

    def __init__(self, model):
        self.updates, self.layers_run = [], 0
        for layer in embedder_module.decoder_layers(model):
            layer.register_forward_hook(self._count)  # registered after the embedder's, so runs after it

    def _count(self, *_):
        self.layers_run += 1

    def update(self, n):
        self.updates.append((n, self.layers_run))


def test_a_long_forward_moves_the_bar_layer_by_layer(tiny_gemma, tmp_path):
    embedder = Embedder(str(write_config(tmp_path, tiny_gemma)))
    layers = len(embedder_module.decoder_layers(embedder.model))
    assert layers == embedder.model.config.num_hidden_layers > 1
    bar = _Bar(embedder.model)
    enc = embedder.encode_documents([TEXTS[0]], progress=bar)  # one document: one forward pass

    moved = [(n, run) for n, run in bar.updates if n]
    assert len(moved) >= layers  # the bar moved while the pass was running, not once at its end
    assert moved[0][1] == 0 and moved[0][0] < enc.n_tokens[0]  # first move: as the first layer ends
    assert sum(n for n, _ in bar.updates) == enc.n_tokens[0]  # exactly the tokens encoded


def test_a_batch_split_after_its_layers_ran_reports_its_tokens_once(tiny_gemma, tmp_path):
    embedder = Embedder(str(write_config(tmp_path, tiny_gemma)), token_budget=4096)

    def out_of_memory_at_the_end(module, args, output):  # after every layer has ticked
        rows = (output[0] if isinstance(output, tuple) else output).shape[0]
        if rows > 2:
            raise torch.OutOfMemoryError(f"test: {rows} rows")

    embedder_module.decoder_layers(embedder.model)[-1].register_forward_hook(out_of_memory_at_the_end)
    bar = _Bar(embedder.model)
    enc = embedder.encode_documents(TEXTS, progress=bar)
    assert bar.layers_run > 2 * len(embedder_module.decoder_layers(embedder.model))  # the split really happened
    assert sum(n for n, _ in bar.updates) == sum(enc.n_tokens)
    assert all(n >= 0 for n, _ in bar.updates)


def test_index_progress_counts_every_token_once(tiny_gemma, tmp_path, capsys):
    from longretr.indexer import index_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for n, text in enumerate(TEXTS):
        (corpus / f"d{n}.txt").write_text(text)
    embedder = Embedder(str(write_config(tmp_path, tiny_gemma)))
    summary = index_corpus(corpus, tmp_path / "index", embedder, progress=True, shard_tokens=100)
    err = capsys.readouterr().err
    assert f"docs={len(TEXTS)}/{len(TEXTS)}" in err
    last = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("indexing")][-1]
    done, whole = last.split("|")[2].split()[0].split("/")
    assert done == whole == str(summary.tokens) and "100%" in last, last


def test_index_takes_documents_in_hash_order_not_longest_first(tiny_gemma, tmp_path, monkeypatch):
    # Longest first biased the ETA (README, Use); a fixed shuffle by content hash does not.
    import hashlib

    from longretr.indexer import index_corpus

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = [" ".join(["fox"] * n) for n in (5, 40, 10, 30, 20, 35)]
    for n, text in enumerate(texts):
        (corpus / f"d{n}.txt").write_text(text)
    embedder = Embedder(str(write_config(tmp_path, tiny_gemma)))
    seen = []
    real = embedder.encode_documents
    monkeypatch.setattr(embedder, "encode_documents", lambda batch, **kw: seen.extend(batch) or real(batch, **kw))
    index_corpus(corpus, tmp_path / "index", embedder, progress=False, shard_tokens=1)  # one document per shard

    by_hash = sorted(texts, key=lambda t: hashlib.sha256(t.encode()).hexdigest())
    assert seen == by_hash != sorted(texts, key=len, reverse=True)


def test_token_wise_modules_run_in_chunks_with_unchanged_results(embedder, monkeypatch):
    monkeypatch.setattr(embedder_module, "TOKEN_WISE_CHUNK", 5)
    chunked = Embedder(embedder.config, token_budget=4096)
    layers = chunked.model.config.num_hidden_layers
    assert all(getattr(m, "_longretr_chunked", False) for n, m in chunked.model.named_modules()
               if n.endswith("mlp") or n.endswith("norm"))
    calls = []
    chunked.model.layers[0].mlp.down_proj.register_forward_hook(lambda *_: calls.append(1))
    # Equal lengths (no padding) and 3 x 41 rows, not a multiple of 5: every row, the last chunk's too, counts.
    texts = [" ".join((WORDS * 2)[i: i + 40]) for i in range(3)]
    rows = sum(len(ids) for ids in chunked.tokenize(texts)[0])
    assert rows == 123
    assert np.allclose(chunked.encode_documents(texts, progress=False).vectors,
                       embedder.encode_documents(texts, progress=False).vectors, atol=1e-6)
    assert len(calls) == -(-rows // 5) and layers > 0  # the feed-forward really ran 5 rows at a time


def test_modules_that_do_not_return_one_tensor_run_whole():
    class Router(torch.nn.Module):  # like an MoE block: (states, router logits)
        def forward(self, x):
            return x * 2, x.sum(-1)

    block = torch.nn.Module()
    block.mlp = Router()
    assert chunk_token_wise(block, 4) == 1
    x = torch.randn(2, 10, 3)
    states, logits = block.mlp(x)
    assert torch.equal(states, x * 2) and torch.equal(logits, x.sum(-1))


def test_pick_device_dtype_explicit_and_errors(monkeypatch):
    assert pick_device_dtype("float32", "cpu") == ("cpu", torch.float32)
    assert pick_device_dtype("bfloat16", "cpu") == ("cpu", torch.bfloat16)
    with pytest.raises(ValueError, match="unknown dtype 'bf17'"):
        pick_device_dtype("bf17", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda:0' requested"):
        pick_device_dtype("auto", "cuda:0")
    assert pick_device_dtype("float32")[0] == "cpu"  # no device given and no CUDA: the CPU


def test_pick_device_dtype_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device_dtype("auto") == ("cuda", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(embedder_module, "_cpu_has_native_bf16", lambda: True)
    assert pick_device_dtype("auto") == ("cpu", torch.bfloat16)
    monkeypatch.setattr(embedder_module, "_cpu_has_native_bf16", lambda: False)
    assert pick_device_dtype("auto") == ("cpu", torch.float32)


@pytest.mark.parametrize(("flags", "native"), [("avx512f avx512_bf16", True), ("avx512f amx_bf16 amx_tile", True),
                                               ("avx2 avx512f fma", False)])
def test_native_bf16_is_read_from_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    assert embedder_module._cpu_has_native_bf16(cpuinfo) is native
    assert embedder_module._cpu_has_native_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize("exported", [None, "ACTIVE"])
def test_import_sets_the_openmp_wait_policy_and_an_exported_value_wins(exported):
    # libgomp reads it once, when torch starts its threads, so `import longretr` must set it before torch; a fresh
    # interpreter is the only way to see that.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if exported is not None:
        env["OMP_WAIT_POLICY"] = exported
    code = "import os, longretr; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [exported or "PASSIVE"]
