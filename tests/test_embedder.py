import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from tiny_models import WORDS
from tqdm.auto import tqdm

from longretr.config import ModelConfig, load_config
from longretr.embedder import Embedder, pack_batches, pool
from longretr.fusion import FUSION_DOC_WEIGHT


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


def test_padding_and_batch_composition_do_not_change_embeddings(embedder, monkeypatch):
    short = "the fox"
    long = " ".join(["the quick brown fox jumps over a lazy dog"] * 4)
    alone = embedder.encode_documents([short]).vectors[0]
    # pack_batches keeps texts this different apart; one batch makes the short one mostly padding
    monkeypatch.setattr("longretr.embedder.pack_batches", lambda lengths, budget: [list(range(len(lengths)))])
    batched = embedder.encode_documents([long, short, long[:20]])
    assert batched.padding_waste > 0.4 and np.allclose(alone, batched.vectors[1], atol=1e-5)
    assert np.allclose(embedder.encode_queries(["fox"])[0], embedder.encode_queries([long, "fox"])[1], atol=1e-5)


def test_queries_get_the_instruction_documents_do_not(embedder):
    q = embedder.encode_queries(["the fox"])[0]
    d_with = embedder.encode_documents(["Find it; the fox"]).vectors[0]
    d_plain = embedder.encode_documents(["the fox"]).vectors[0]
    assert np.allclose(q, d_with, atol=1e-6) and not np.allclose(q, d_plain, atol=1e-3)


def test_encode_texts_gives_whole_text_vectors_cut_where_asked(embedder):
    same_start = ["fox dog " * 20 + "alpha", "fox dog " * 20 + "omega"]
    cut = embedder.encode_texts(same_start, max_tokens=8, progress=False)
    whole = embedder.encode_texts(same_start, progress=False)
    assert np.allclose(cut[0], cut[1], atol=1e-6) and not np.allclose(whole[0], whole[1], atol=1e-3)
    assert np.allclose(embedder.encode_texts(["the fox"], progress=False)[0],
                       embedder.encode_documents(["the fox"]).vectors[0], atol=1e-6)  # no instruction added


@pytest.mark.parametrize("method", ["encode_documents", "encode_queries", "encode_texts", "tokenize", "passages"])
def test_bad_texts_are_named_not_left_to_the_tokenizer(embedder, method):
    encode = getattr(embedder, method)
    what = "queries" if method == "encode_queries" else "texts"
    for bad, kind in ((None, "NoneType"), (b"fox", "bytes"), (3, "int")):
        with pytest.raises(TypeError, match=rf"{what}\[1\] must be a str, got {kind}"):
            encode(["the fox", bad])
    with pytest.raises(TypeError, match=f"{what} must be a list of strings, got one str"):
        encode("the fox")  # not seven one-character texts
    if method != "passages":  # an empty document is encoded (as its BOS token here), as the published tasks may hold
        got = encode(["the fox", "", " \n\t"])
        assert len(got.vectors if method == "encode_documents" else got[0] if method == "tokenize" else got) == 3


def test_a_text_without_tokens_is_named_not_crashed_on(tiny_config):
    from tokenizers import processors

    emb = Embedder(str(tiny_config))
    emb.tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A")  # adds no BOS
    for encode in (emb.encode_documents, emb.encode_texts):  # "" had no tokens: a division by zero in the pooling
        with pytest.raises(ValueError, match=r"texts\[1\] gives no tokens"):
            encode(["the fox", ""])


def test_empty_lists_give_empty_results(embedder):
    enc = embedder.encode_documents([])
    assert enc.vectors.shape == (0, 32) and enc.n_tokens == [] and enc.truncated == [] and enc.extra == {}
    assert embedder.encode_queries([]).shape == (0, 32) and embedder.encode_texts([]).shape == (0, 32)
    assert embedder.passages([]) == [] and embedder.tokenize([]) == ([], [])
    assert np.allclose(embedder.encode_documents(t for t in ["the fox"]).vectors,  # any iterable of str
                       embedder.encode_documents(["the fox"]).vectors)


def test_encode_texts_refuses_a_cut_that_leaves_no_tokens(embedder):
    for bad in (0, -2):  # 0 divided by zero in the pooling; -2 cut two tokens off the end
        with pytest.raises(ValueError, match=f"max_tokens must be None or at least 1, got {bad}"):
            embedder.encode_texts(["the quick brown fox"], max_tokens=bad, progress=False)


def test_embedder_takes_a_config_path_object(tiny_config, embedder):
    by_path = Embedder(tiny_config)
    assert by_path.config == load_config(str(tiny_config))
    assert np.allclose(by_path.encode_queries(["fox"]), embedder.encode_queries(["fox"]), atol=1e-6)
    with pytest.raises(TypeError, match="config must be a ModelConfig, a config name or a path, got int"):
        Embedder(3)


def test_a_document_past_max_tokens_is_encoded_whole_in_windows(embedder):
    cfg = embedder.config
    words = [WORDS[i % len(WORDS)] for i in range(150)]  # one token each, after the BOS: 151 tokens
    text = " ".join(words)
    try:
        embedder.config = replace(cfg, lead_tokens=0, span_tokens=0)  # one vector per window
        enc = embedder.encode_documents([text, "dog"], progress=False)
        cut = embedder.encode_documents([text, "dog"], progress=False, max_tokens=64)
        # each window is a pass of its own: the BOS, then its tokens (the last one started earlier, to be full)
        windows = embedder.config.windows(151, head=1)
        alone = embedder.encode_documents([" ".join(words[s - 1: e - 1]) for s, e in windows], progress=False)
        cost = embedder.document_tokens([text, "dog"])
        with tqdm(total=sum(cost), file=io.StringIO()) as bar:  # as the indexer's bar: its total, then the passes
            embedder.encode_documents([text, "dog"], progress=bar)
    finally:
        embedder.config = cfg
    assert windows == [(64, 127), (88, 151)]
    assert enc.n_tokens == [151, 2] and enc.truncated == [False, False] and sorted(enc.extra) == [0]
    assert cut.n_tokens == [64, 2] and cut.truncated == [True, False] and cut.extra == {}
    assert np.allclose(enc.vectors, cut.vectors, atol=1e-6)  # the document's vector: its first max_tokens
    assert np.allclose(enc.extra[0], alone.vectors, atol=1e-5)
    assert cost == [64 + 64 + 64, 2] and bar.n == sum(cost)


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
    assert list(enc.extra) == [1] and np.allclose(enc.extra[1], head, atol=1e-5)  # the short one has no lead
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


def test_span_tokens_give_a_long_document_its_span_means_from_the_whole_pass(embedder):
    cfg = embedder.config
    long, short = "the archive index " + " ".join(["fox jumps over the lazy dog"] * 8), "the fox"
    try:
        embedder.config = spans = replace(cfg, span_tokens=16)
        enc = embedder.encode_documents([short, long])  # token_budget 64: the long one is split from the short
        embedder.config = both = replace(cfg, span_tokens=16, lead_tokens=16)
        with_lead = embedder.encode_documents([short, long])
    finally:
        embedder.config = cfg
    ids = embedder.tokenizer(long)["input_ids"]
    n = len(ids)
    ranges = spans.spans_for(n)
    assert enc.n_tokens[1] == n and len(ranges) > 2 and list(enc.extra) == [1]  # the short one has none
    with torch.inference_mode():  # the reference: one pass over the whole document, each span's states averaged
        hidden = embedder.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, n, dtype=torch.long),
                                use_cache=False).last_hidden_state[0].float()
    want = torch.nn.functional.normalize(torch.stack([hidden[a:b].mean(0) for a, b in ranges]), dim=-1).numpy()
    assert np.allclose(enc.extra[1], want, atol=1e-4)
    whole = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
    assert np.allclose(enc.vectors[1], whole, atol=1e-4)  # the whole document's vector is unchanged
    # with a lead too, the lead comes first and the spans follow
    assert len(with_lead.extra[1]) == 1 + len(ranges) and np.allclose(with_lead.extra[1][1:], want, atol=1e-4)
    assert both.fingerprint() not in (spans.fingerprint(), cfg.fingerprint())
    # Dense mode scores a document its best cosine of all its vectors; hybrid fuses that averaged with the higher of
    # its whole and lead cosines (FUSION_DOC_WEIGHT); a document without other vectors scores its cosine in both.
    queries = embedder.encode_queries(["archive index", "lazy dog", "the fox"])
    doc = np.maximum(queries @ whole, queries @ with_lead.extra[1][0])
    best = np.maximum(doc, (queries @ want.T).max(1))
    assert (best > doc).any()  # else the two scores would be the same
    w = FUSION_DOC_WEIGHT
    assert np.allclose(with_lead.scores(queries)[:, 1], best, atol=1e-4)
    assert np.allclose(with_lead.fusion_scores(queries)[:, 1], (best + w * doc) / (1 + w), atol=1e-4)
    for scores in (with_lead.scores(queries), with_lead.fusion_scores(queries)):
        assert np.allclose(scores[:, 0], queries @ with_lead.vectors[0], atol=1e-5)
    no_lead = np.maximum(queries @ whole, (queries @ want.T).max(1))
    assert np.allclose(enc.fusion_scores(queries)[:, 1], (no_lead + w * queries @ whole) / (1 + w), atol=1e-4)


def test_each_other_vector_knows_the_characters_of_its_text(embedder):
    cfg = embedder.config
    text = "The archive index.\n\n" + " ".join(f"fox {w}, jumps" for w in ["over", "the lazy", "dog"] * 6)
    try:
        embedder.config = replace(cfg, lead_tokens=16, span_tokens=16)
        enc = embedder.encode_documents([text, "the fox"])
        passages = embedder.passages([text, "the fox"])
    finally:
        embedder.config = cfg
    ids = embedder.tokenizer(text)["input_ids"]
    assert len(ids) > cfg.max_tokens and not enc.truncated[0]  # so the last vectors are a window's
    ranges = replace(cfg, lead_tokens=16, span_tokens=16).other_ranges(len(ids), head=1)
    assert ranges[:1] == [(0, 16)] and ranges[-1][1] == len(ids)
    assert passages[0].shape == (len(enc.extra[0]), 2) == (len(ranges), 2) and passages[1].shape == (0, 2)
    for (start, end), (a, b) in zip(ranges, passages[0].tolist()):
        # the characters hold exactly the range's tokens (less the BOS, which covers no text)
        assert embedder.tokenizer(text[a:b], add_special_tokens=False)["input_ids"] == ids[max(start, 1):end]
    spans = passages[0][1:].tolist()
    assert spans[0][0] == 0 and spans[-1][1] == len(text)  # the spans cover the text, with only spaces between
    assert all(a2 <= b or text[b:a2].strip() == "" for (_, b), (a2, _) in zip(spans, spans[1:]))  # (or overlap)


def test_spans_cover_the_document_and_a_short_tail_joins_the_last_span():
    cfg = ModelConfig(name="s", backbone="org/model", max_tokens=4096, span_tokens=16)
    assert cfg.spans_for(16) == [] and cfg.spans_for(10) == []
    assert cfg.spans_for(40) == [(0, 16), (16, 32), (32, 40)]  # a tail of 8 (>= a quarter span) is its own
    assert cfg.spans_for(35) == [(0, 16), (16, 35)]  # a tail of 3 joins the span before it
    assert cfg.spans_for(17) == []  # one span would be the whole document again
    assert replace(cfg, span_tokens=0).spans_for(40) == []


def test_span_tokens_change_the_fingerprint_only_when_on_and_need_mean_pooling():
    cfg = ModelConfig(name="s", backbone="org/model", max_tokens=4096)
    assert replace(cfg, span_tokens=256).fingerprint() != cfg.fingerprint()
    assert replace(cfg, span_tokens=4096).fingerprint() == cfg.fingerprint()  # no document is longer than a span
    with pytest.raises(ValueError, match="span_tokens must be 0 or at least 8"):
        replace(cfg, span_tokens=4)
    with pytest.raises(ValueError, match="span_tokens needs mean pooling"):
        replace(cfg, span_tokens=256, pooling="last")


def test_span_study_builds_longer_spans_from_the_128_token_ones(embedder):
    from tiny_models import load_script

    study = load_script("span_study")
    cfg = embedder.config
    docs = [" ".join(f"w{i % 40}" for i in range(n)) for n in (60, 200, 450)]
    try:
        embedder.config = replace(cfg, max_tokens=32768, span_tokens=128, normalize=False)
        units = embedder.encode_documents(docs, progress=False)
        embedder.config = replace(cfg, max_tokens=32768, span_tokens=256)
        direct = embedder.encode_documents(docs, progress=False)
    finally:
        embedder.config = cfg
    rows = sorted(units.extra)
    cached = {"n_tokens": np.array(units.n_tokens), "owners": np.array([r for r in rows for _ in units.extra[r]]),
              "spans": np.concatenate([units.extra[r] for r in rows])}
    owners, vectors = study.span_vectors(cfg, cached, 256)
    assert len(direct.extra) >= 2 and max(len(v) for v in direct.extra.values()) >= 2
    assert owners.tolist() == [r for r in sorted(direct.extra) for _ in direct.extra[r]]
    assert np.allclose(vectors, np.concatenate([direct.extra[r] for r in sorted(direct.extra)]), atol=1e-4)


def test_model_config_with_a_wrong_type_or_no_backbone_names_the_file(tmp_path):
    """Both were a TypeError traceback (a comparison in __post_init__, a missing argument) from every command."""
    path = tmp_path / "bad.toml"
    for text, message in [('backbone = "x"\nmax_tokens = "big"\n', "max_tokens must be an integer, got 'big'"),
                          ('backbone = "x"\nadapter_weights = ["a"]\n', "adapter_weights must be a list of numbers"),
                          ('attention = "causal"\n', "no backbone")]:
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"bad\.toml: {message}"):
            load_config(path)
    path.write_text('backbone = "x"\nadapter = ["a", "b"]\nadapter_weights = [1, 0.5]\nnormalize = false\n')
    assert load_config(path).adapter_weights == (1.0, 0.5)  # TOML integers are numbers


def test_windows_cover_a_long_document_once_and_a_short_last_one_starts_earlier():
    cfg = ModelConfig(name="w", backbone="org/model", max_tokens=32768, span_tokens=256, lead_tokens=256)
    assert cfg.windows(32768, head=1) == []
    assert cfg.windows(32769, head=1) == [(32769 - 256, 32769)]  # one token past: a window of 256, not of 1
    wins = cfg.windows(100_000, head=1)
    assert wins == [(32768, 65535), (65535, 98302), (98302, 100_000)]  # each 32767 tokens after its BOS
    ranges = cfg.other_ranges(100_000, head=1)
    assert ranges[0] == (0, 256) and ranges[1:129] == cfg.spans_for(32768)
    window_spans = ranges[129:]
    assert window_spans[0] == (32768, 33024) and window_spans[-1][1] == 100_000
    assert all(b == a2 for (_, b), (a2, _) in zip(window_spans, window_spans[1:]))  # no gaps, no overlap here
    # no spans, no BOS: a window is one vector; the last full (max_tokens long) where a document has the tokens
    assert ModelConfig(name="w", backbone="org/model", max_tokens=64).other_ranges(100, head=0) == [(36, 100)]
