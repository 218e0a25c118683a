"""Offline passkey/needle regeneration: LongEmbed's templates, word caps, one needle per document,
the published layout, seeding and the cache."""

import gzip
import json
import re
from pathlib import Path

import pytest

from longretr.evaluate.data import load_task
from longretr.evaluate.needles import NEEDLES
from longretr.evaluate.synth import FillerError, generate, load_filler, synthetic_sets

PROSE = " ".join(f"Sentence number {i} talks about the weather in town {i % 7} and nothing else." for i in range(400))


@pytest.fixture()
def filler_file(tmp_path) -> Path:
    path = tmp_path / "prose.txt"
    paragraphs = [PROSE[i:i + 900].rsplit(".", 1)[0].split(". ", 1)[-1] + "." for i in range(0, len(PROSE), 900)]
    path.write_text("\n\n".join(paragraphs))
    return path


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_passkey_follows_longembed_templates_and_word_caps(tmp_path):
    meta = generate("passkey", tmp_path, (256, 1024), candidates=6, queries=3, seed=1)
    corpus = _rows(tmp_path / "passkey" / "corpus.jsonl")
    queries = _rows(tmp_path / "passkey" / "queries.jsonl")
    qrels = _rows(tmp_path / "passkey" / "qrels.jsonl")
    assert set(corpus[0]) == {"doc_id", "text", "context_length"}  # the published fields, nothing else
    assert set(queries[0]) == {"qid", "text", "context_length"} and set(qrels[0]) == {"qid", "doc_id", "context_length"}
    assert len(corpus) == 12 and len(queries) == len(qrels) == 6
    by_id = {m["doc_id"]: m for m in meta}
    for doc in corpus:
        info = by_id[doc["doc_id"]]
        words = len(doc["text"].split())
        assert words <= doc["context_length"] * 0.75 and words > doc["context_length"] * 0.75 - 40
        name, key = info["name"], info["key"]
        needle = f"\n{name}'s pass key is {key}. Remember it. {key} is the pass key for {name}.\n"
        assert doc["text"].count("pass key is") == 1
        assert needle in f"\n{doc['text']}\n"
        filler = doc["text"].replace(needle.strip(), "").split()
        assert " ".join(filler).startswith("The grass is green. The sky is blue. The sun is yellow. Here we go.")
    names_256 = [by_id[d["doc_id"]]["name"] for d in corpus if d["context_length"] == 256]
    assert len(set(names_256)) == 6  # one person per candidate
    for q, r in zip(queries, qrels):
        assert q["qid"] == r["qid"]
        assert q["text"] == f"what is the passkey for {by_id[r['doc_id']]['name']}?"


def test_needle_inserts_each_fact_once_into_the_same_haystack(tmp_path, filler_file):
    filler = load_filler(filler_file)
    assert filler.source["path"] == str(filler_file) and len(filler.source["sha256"]) == 64
    meta = generate("needle", tmp_path, (512,), candidates=5, queries=5, seed=2, filler=filler)
    corpus = _rows(tmp_path / "needle" / "corpus.jsonl")
    queries = {q["qid"]: q["text"] for q in _rows(tmp_path / "needle" / "queries.jsonl")}
    facts = dict(NEEDLES)
    hays = []
    for doc, info in zip(corpus, meta):
        assert sum(fact in doc["text"] for fact in facts) == 1 and info["fact"] in doc["text"]
        hays.append(" ".join(doc["text"].replace(info["fact"], "").split()))
        assert 0.0 <= info["depth"] <= 1.0
    # every candidate is the same prose (cut to fit its needle under the word cap) with a different needle
    longest = max(hays, key=len)
    assert all(longest.startswith(h) and len(h) > 0.9 * len(longest) for h in hays)
    for qrel in _rows(tmp_path / "needle" / "qrels.jsonl"):
        fact = next(m["fact"] for m in meta if m["doc_id"] == qrel["doc_id"])
        assert queries[qrel["qid"]] == facts[fact]


def test_needle_positions_vary(tmp_path, filler_file):
    meta = generate("needle", tmp_path, (2048,), candidates=20, queries=1, seed=0, filler=load_filler(filler_file))
    depths = [m["depth"] for m in meta]
    assert min(depths) < 0.3 and max(depths) > 0.7


def test_generation_is_seeded(tmp_path):
    generate("passkey", tmp_path / "a", (256,), 5, 2, seed=7)
    generate("passkey", tmp_path / "b", (256,), 5, 2, seed=7)
    generate("passkey", tmp_path / "c", (256,), 5, 2, seed=8)
    a, b, c = ((tmp_path / x / "passkey" / "corpus.jsonl").read_text() for x in "abc")
    assert a == b and a != c


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="queries \\(3\\) <= candidates \\(2\\)"):
        generate("passkey", tmp_path, (256,), candidates=2, queries=3, seed=0)
    with pytest.raises(ValueError, match="<= 100"):
        generate("needle", tmp_path, (256,), candidates=101, queries=1, seed=0, filler=None)


def test_sets_are_cached_in_the_published_layout(tmp_path, filler_file):
    cache = tmp_path / "cache"
    root = synthetic_sets(["passkey", "needle"], (256, 512), 4, 2, 0, filler_file, cache=cache)
    info = json.loads((root / "generation.json").read_text())
    assert info["needle_filler"]["path"] == str(filler_file) and info["differences_from_longembed"]
    assert info["passkey_query"] == "what is the passkey for {name}?"
    stamp = (root / "passkey" / "corpus.jsonl").stat().st_mtime_ns
    assert synthetic_sets(["passkey", "needle"], (256, 512), 4, 2, 0, filler_file, cache=cache) == root
    assert (root / "passkey" / "corpus.jsonl").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert synthetic_sets(["passkey", "needle"], (256, 512), 4, 2, 1, filler_file, cache=cache) != root
    for task in ("passkey", "needle"):
        sets = load_task(root, task, (256, 512))  # the same loader reads the published data
        assert [len(s.corpus) for s in sets] == [4, 4] and [len(s.queries) for s in sets] == [2, 2]
    assert [p.name for p in cache.iterdir() if p.name.startswith(".")] == []  # no temp folders left


def test_filler_errors_name_the_file(tmp_path):
    with pytest.raises(FillerError, match=r"absent.txt not found; run `make longembed-filler`"):
        load_filler(tmp_path / "absent.txt")
    binary = tmp_path / "bin.gz"
    binary.write_bytes(b"\x00\xff\x00 not gzip")
    with pytest.raises(FillerError, match="bin.gz: not a readable UTF-8 text"):
        load_filler(binary)
    short = tmp_path / "short.txt.gz"
    short.write_bytes(gzip.compress(b"Too short to hide a needle in."))
    with pytest.raises(FillerError, match="need a long prose text"):
        load_filler(short)


def test_a_jargon_file_layout_loses_its_contents_and_tables(tmp_path):
    # The shape of jargon-text's jargon.txt.gz, which CI machines do not have installed (the test below then skips):
    # a table of contents naming the first chapter, the chapter itself, and box-drawn tables inside entries.
    toc = "Table of Contents\n\nWelcome to the Jargon File\nOf Slang, Jargon, and Techspeak\n"
    table = "┌──────┬──────┐\n│ a    │ b    │\n└──────┴──────┘\n"
    cut = PROSE.index(". ", 3000) + 2  # the table sits between two sentences
    text = f"{toc}\n\nWelcome to the Jargon File\n\n{PROSE[:cut]}\n\n{table}\n{PROSE[cut:]}\n"
    path = tmp_path / "jargon.txt.gz"
    path.write_bytes(gzip.compress(text.encode()))
    filler = load_filler(path)
    # the contents are skipped (from the chapter's own heading on, as with the real file below)
    assert filler.sentences[:2] == ["Welcome to the Jargon File", "Sentence number 0 talks about the weather in town 0 "
                                    "and nothing else."]
    assert not any(re.search("[│┌┐└┘─┬┴]", s) or "Techspeak" in s for s in filler.sentences)
    assert filler.words == 5 + len(PROSE.split()) and filler.source["path"] == str(path)


def test_jargon_file_is_cleaned_when_installed():
    from longretr.evaluate.synth import DEFAULT_FILLER

    if not DEFAULT_FILLER.is_file():
        pytest.skip("jargon-text not installed (make longembed-filler)")
    filler = load_filler()
    assert filler.source["package"] == "jargon-text" and filler.words > 200_000
    assert filler.sentences[0] == "Welcome to the Jargon File"  # the table of contents is skipped
    assert not any(re.search("[│┌┐└┘═]", s) for s in filler.sentences)
