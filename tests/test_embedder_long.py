"""A very long text is tokenized in line-aligned pieces (Embedder._long_tokens), not in one tokenizer call: one call
over a 60 MB text held 10 GB. The thresholds are made small here, so that a few hundred characters count as long."""

from dataclasses import replace

import numpy as np
import pytest
from tiny_models import WORDS

import longretr.embedder as embedder_module  # its names looked up in the tests: those of an older one fail there

LONG, PIECE = 300, 120  # characters: texts over LONG go in pieces of at most PIECE


class SeenTexts:
    """The tokenizer, keeping every text it is given."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.texts = tokenizer, []

    def __call__(self, texts, **kwargs):
        self.texts += [texts] if isinstance(texts, str) else list(texts)
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


@pytest.fixture()
def small_pieces(monkeypatch):
    # raising=False: on code without the constants the tests fail on what the tokenizer saw, not here
    monkeypatch.setattr(embedder_module, "LONG_TEXT_CHARS", LONG, raising=False)
    monkeypatch.setattr(embedder_module, "PIECE_CHARS", PIECE, raising=False)


@pytest.fixture()
def seen(embedder, monkeypatch) -> SeenTexts:
    spy = SeenTexts(embedder.tokenizer)
    monkeypatch.setattr(embedder, "tokenizer", spy)
    return spy


def cuts(text: str, size: int) -> list[tuple[int, int]]:
    return embedder_module.text_pieces(text, size)


def lines_text(n_lines: int, seed: int = 0) -> str:
    """Lines of the tiny vocabulary's words, with a blank line between paragraphs."""
    rng = np.random.default_rng(seed)
    lines = []
    for n in range(n_lines):
        lines.append(" ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) + ("." if n % 3 else ","))
        if n % 5 == 4:
            lines.append("")
    return "\n".join(lines) + "\n"


def whole_call(embedder, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = embedder.tokenizer(text, return_offsets_mapping=True)
    return enc["input_ids"], enc["offset_mapping"]


def test_text_pieces_cut_after_line_ends_else_before_spaces_else_hard():
    assert cuts("short", 10) == [(0, 5)]
    assert cuts("aaaa\nbbbb\n\ncccc", 8) == [(0, 5), (5, 11), (11, 15)]
    assert cuts("ab\ncd\n\nef", 6) == [(0, 3), (3, 9)]  # not between the two line ends of "\n\n"
    assert cuts("\n\n\n\nab", 3) == [(0, 3), (3, 6)]  # only a run of line ends: cut in it
    assert cuts("one two three four", 10) == [(0, 7), (7, 13), (13, 18)]  # the next piece starts " three"
    assert cuts("x" * 25, 10) == [(0, 10), (10, 20), (20, 25)]
    text = lines_text(200)
    pieces = cuts(text, PIECE)
    assert "".join(text[a:b] for a, b in pieces) == text and all(0 < b - a <= PIECE for a, b in pieces)
    assert all(text[b - 1] == "\n" and text[b] != "\n" for _, b in pieces[:-1])


def test_a_text_up_to_the_threshold_is_tokenized_in_one_call_as_before(embedder, small_pieces, seen):
    text = lines_text(40)[:LONG]
    ids, offsets = embedder._tokens([text, "the fox"], offsets=True)
    assert seen.texts == [text, "the fox"]  # the one call, as ever
    for got_ids, got_offsets, t in zip(ids, offsets, [text, "the fox"]):
        want_ids, want_offsets = whole_call(embedder, t)
        assert type(got_ids) is list and got_ids == want_ids and got_offsets == want_offsets
    assert embedder._token_ids([text]) == [ids[0]] and embedder.tokenize([text])[0] == [ids[0][:64]]


def test_a_long_text_is_tokenized_in_line_pieces_with_the_whole_calls_tokens(embedder, small_pieces, seen):
    text = lines_text(60)
    assert len(text) > 3 * PIECE
    ids, offsets = embedder._tokens([text], offsets=True)
    ids, offsets = ids[0], offsets[0]
    pieces = [text[a:b] for a, b in cuts(text, PIECE)]
    assert [t for t in seen.texts if t != embedder_module.PROBE_TEXT] == pieces
    assert all(p.endswith("\n") for p in pieces[:-1])
    # The tiny tokenizer splits at whitespace and gives line ends no token, so a cut after a line end is a token
    # boundary of the whole call: the same tokens, BOS once, offsets into the whole text.
    want_ids, want_offsets = whole_call(embedder, text)
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32 and ids.tolist() == want_ids
    assert ids[0] == embedder.tokenizer.bos_token_id and (ids == ids[0]).sum() == 1
    assert offsets.shape == (len(ids), 2) and offsets.tolist() == [list(o) for o in want_offsets]
    assert (np.diff(offsets[1:, 0]) > 0).all() and (offsets[1:, 1] > offsets[1:, 0]).all()
    assert [text[a:b] for a, b in offsets] == [text[a:b] for a, b in want_offsets]
    assert embedder.tokenize([text]) == ([want_ids[:64]], [True])  # lists, as for any text


def test_a_long_word_is_cut_hard_and_only_its_tokens_there_differ(embedder, small_pieces):
    text = "the fox\n" + "foxdog" * 60  # one 360-character word: the tiny WordPiece makes it one <unk>
    (ids,), (offsets,) = embedder._tokens([text], offsets=True)
    want_ids, want_offsets = whole_call(embedder, text)
    assert cuts(text, PIECE) == [(0, 8), (8, 128), (128, 248), (248, 368)] and len(want_ids) == 4
    assert ids.tolist()[:3] == want_ids[:3] and offsets[:3].tolist() == [list(o) for o in want_offsets[:3]]
    assert want_offsets[3] == (8, 368) and offsets[3:].tolist() == [[8, 128], [128, 248], [248, 368]]


def test_token_counts_vectors_and_passages_agree_for_a_long_text(embedder, small_pieces, seen, monkeypatch):
    monkeypatch.setattr(embedder, "config", replace(embedder.config, lead_tokens=16, span_tokens=16))
    cfg, text = embedder.config, lines_text(60)
    texts = [text, "the fox"]
    cost = embedder.document_tokens(texts)
    enc = embedder.encode_documents(texts, progress=False)
    passages = embedder.passages(texts)
    assert max(len(t) for t in seen.texts) <= PIECE  # no path tokenized the long text whole
    ids = embedder._token_ids([text])[0]
    n, head = len(ids), embedder._head(ids)
    assert n > 3 * cfg.max_tokens and head == 1 and enc.n_tokens == [n, 3] and enc.truncated == [False, False]
    passes = embedder._window_passes(ids)
    assert cost[0] == cfg.max_tokens + cfg.lead_tokens + sum(len(seq) for seq, _ in passes)
    assert len(passages[0]) == len(enc.extra[0]) == len(cfg.other_ranges(n, head))
    assert passages[0][-1, 1] == len(text.rstrip("\n"))  # the last window's passage ends at the text's end
    # and all as the one whole-text call gives them (the tiny tokenizer's pieces have its tokens)
    monkeypatch.setattr(embedder_module, "LONG_TEXT_CHARS", 10**9)
    assert embedder.document_tokens(texts) == cost
    whole = embedder.encode_documents(texts, progress=False)
    assert whole.n_tokens == enc.n_tokens and np.allclose(whole.vectors, enc.vectors, atol=1e-5)
    assert np.allclose(whole.extra[0], enc.extra[0], atol=1e-5)
    assert all((a == b).all() for a, b in zip(embedder.passages(texts), passages))


def test_the_tokenizer_never_sees_a_long_text_whole(embedder, small_pieces, seen):
    text = lines_text(60)
    for path in (embedder.document_tokens, embedder.passages, embedder.encode_documents, embedder._token_ids):
        seen.texts.clear()
        got = path([text])
        assert seen.texts and max(len(t) for t in seen.texts) <= PIECE, path.__name__
    ids = got[0]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int32  # 4 bytes an id held, not a Python int's 28 + 8
