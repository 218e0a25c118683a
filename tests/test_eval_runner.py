"""End to end: sets -> systems -> metrics -> results.json, table.md, PNG, TREC runs; and `longretr eval`."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_models import write_config
from typer.testing import CliRunner

from longretr.cli import app
from longretr.evaluate.baselines import ChunkedMiniLMScorer, DenseScorer
from longretr.evaluate.data import RetrievalSet, load_task
from longretr.evaluate.runner import Settings, evaluate, plan_lines

FIXTURE = Path(__file__).parent / "data" / "longembed"
PROSE = " ".join(f"Sentence number {i} talks about the weather in town {i % 7} and nothing else." for i in range(900))


@pytest.fixture()
def filler(tmp_path) -> Path:
    path = tmp_path / "prose.txt"
    path.write_text(PROSE)
    return path


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGRETR_HOME", str(tmp_path / "home"))  # the synthetic-set cache


def test_bm25_on_the_published_layout_gives_the_hand_computed_scores(tmp_path):
    st = Settings(models=[], baselines=["bm25"], tasks=["passkey", "needle", "narrativeqa", "qmsum",
                  "summ_screen_fd", "2wikimqa"], lengths=(256, 512, 8192), candidates=None, queries=None,
                  data=str(FIXTURE), out=str(tmp_path / "out"), run="fixture")
    results, paths = evaluate(st, log=lambda *_: None, progress=False)
    bm25 = results["systems"]["bm25"]["summary"]
    # each synthetic query's name/fact occurs only in its document -> Acc@1 100 at every length
    assert [bm25[k] for k in ("passkey_le4k", "passkey_gt4k", "needle_le4k", "needle_gt4k")] == [100.0] * 4
    # real tasks: q0 ranked first (nDCG 1); q1's words are only in a wrong document, so its relevant one is
    # third (two zero-score documents in corpus order): nDCG 1/log2(4) = 0.5 -> mean 75
    for task in ("narrativeqa", "qmsum", "summ_screen_fd", "2wikimqa"):
        assert bm25[task] == 75.0
    assert bm25["avg"] == 87.5  # (4 x 100 + 4 x 75) / 8

    saved = json.loads(paths["json"].read_text())
    assert saved["settings"]["data"] == str(FIXTURE) and saved["machine"]["cores"] >= 1
    assert {s["split"] for s in saved["systems"]["bm25"]["sets"]} == {"test_256", "test_512", "test_8192", "test"}
    table = paths["table"].read_text()
    assert "| **bm25** (measured) | bm25 | 100.0 | 100.0 | 100.0 | 100.0 | 75.0 | 75.0 | 75.0 | 75.0 | 87.5 |" in table
    assert "| DiffEmbed (Dream 7B) (*quoted, not measured*; N=16k) | paper | 100.0 | 29.3 | 86.8 | 20.0 |" in table
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trec = (paths["json"].parent / "runs" / "bm25" / "qmsum.trec").read_text().splitlines()
    assert len(trec) == 2 * 3  # two queries, three candidates each
    assert trec[3].split() == ["qmsum_q1", "Q0", "qmsum_d1", "1", trec[3].split()[4], "bm25"]
    passkey = (paths["json"].parent / "runs" / "bm25" / "passkey.trec").read_text().splitlines()
    assert len(passkey) == 3 * 2 * 3  # three lengths in one file


def test_dense_model_on_regenerated_sets(tmp_path, tiny_config, filler):
    st = Settings(models=[str(tiny_config)], baselines=[], tasks=["passkey", "needle"], lengths=(256, 8192),
                  candidates=3, queries=2, filler=str(filler), out=str(tmp_path / "out"), run="tiny")
    results, paths = evaluate(st, log=lambda *_: None, progress=False)
    tiny = results["systems"]["tiny"]
    assert tiny["requested"] == str(tiny_config) and tiny["describe"]["config"]["max_tokens"] == 64
    assert [s["split"] for s in tiny["sets"]] == ["test_256", "test_8192"] * 2
    assert all(s["truncated_docs"] == 0 and s["doc_tokens_max"] > 64 for s in tiny["sets"])  # whole, in windows
    assert all(s["value"] in (0.0, 50.0, 100.0) for s in tiny["sets"])  # 2 queries per set
    assert set(tiny["scores"]["passkey"]) == {"256", "8192"} and tiny["summary"]["synthetic_avg"] is not None
    assert results["data"]["source_short"] == "regenerated"
    assert results["data"]["generation"]["needle_filler"]["path"] == str(filler)
    assert "chance Acc@1 here 33.3%" in paths["table"].read_text()


def test_dense_scores_are_query_vectors_times_document_vectors(tiny_config):
    scorer = DenseScorer(str(tiny_config))
    s = RetrievalSet("passkey", "test_256", {"a": "the quick brown fox", "b": "a lazy dog"},
                     {"q": "brown fox"}, {"q": {"a": 1}}, 256)
    got = scorer.score(s, progress=False).scores
    e = scorer.embedder
    want = e.encode_queries(["brown fox"]) @ e.encode_documents(["the quick brown fox", "a lazy dog"]).vectors.T
    assert np.allclose(got, want, atol=1e-5)  # the query instruction applies to queries only


def test_dense_scorer_returns_the_fusion_scores_beside_the_dense_scores(tmp_path, tiny_gemma):
    scorer = DenseScorer(str(write_config(tmp_path, tiny_gemma, lead_tokens=8, span_tokens=8)))
    texts = {"a": "the quick brown fox " * 8, "b": "a lazy dog sleeps in the sun " * 6}
    s = RetrievalSet("passkey", "test_256", texts, {"q": "brown fox", "r": "sun"}, {"q": {"a": 1}, "r": {"b": 1}}, 256)
    got = scorer.score(s, progress=False)
    e = scorer.embedder
    docs, queries = e.encode_documents(list(texts.values())), e.encode_queries(["brown fox", "sun"])
    assert np.allclose(got.scores, docs.scores(queries), atol=1e-5)
    assert np.allclose(got.fusion_scores, docs.fusion_scores(queries), atol=1e-5)
    assert not np.allclose(got.scores, got.fusion_scores)


def test_minilm_document_score_is_the_best_chunk():
    scorer = ChunkedMiniLMScorer(chunk_tokens=16)
    words = ("river boat water bridge stone " * 12).split() + "the red fox sleeps under a tall oak tree".split()
    text = " ".join(words)
    chunks = scorer.chunks(text)
    n_ids = len(scorer.tokenizer(text, add_special_tokens=False)["input_ids"])
    assert len(chunks) == math.ceil(n_ids / 14) and all(len(c) <= 16 for c in chunks)
    assert all(c[0] == scorer.tokenizer.cls_token_id and c[-1] == scorer.tokenizer.sep_token_id for c in chunks)
    s = RetrievalSet("needle", "test_256", {"long": text, "other": "stock markets and interest rates"},
                     {"q": "where does the red fox sleep?"}, {"q": {"long": 1}}, 256)
    scored = scorer.score(s, progress=False)
    model = scorer.model
    q = model.encode(["where does the red fox sleep?"], normalize_embeddings=True)
    pieces = [scorer.tokenizer.decode(c[1:-1]) for c in chunks]
    each = model.encode(pieces, normalize_embeddings=True) @ q[0]
    assert scored.scores[0, 0] == pytest.approx(float(each.max()), abs=1e-4)
    assert int(np.argmax(each)) == len(chunks) - 1  # the fox is in the last chunk
    assert scored.stats["chunks"] == len(chunks) + 1 and scored.scores[0, 0] > scored.scores[0, 1]
    with pytest.raises(ValueError, match="between 8 and 512"):
        ChunkedMiniLMScorer(chunk_tokens=1024)


def test_minilm_chunk_vectors_are_cached_per_corpus(tmp_path, monkeypatch):
    plain = ChunkedMiniLMScorer(chunk_tokens=16)
    cached = ChunkedMiniLMScorer(chunk_tokens=16, cache=tmp_path)
    docs = {"a": "the red fox sleeps under a tall oak tree " * 4, "b": "interest rates"}
    s = RetrievalSet("needle", "test_256", docs,
                     {"q": "where does the fox sleep?"}, {"q": {"a": 1}}, 256)
    first = cached.score(s, progress=False)
    assert not first.stats["chunk_vectors_from_cache"] and len(list(tmp_path.glob("*.npy"))) == 1
    monkeypatch.setattr(cached, "_encode", lambda *a: pytest.fail("encoded again despite the cache"))
    again = cached.score(s, progress=False)
    assert again.stats["chunk_vectors_from_cache"]
    assert np.array_equal(again.scores, first.scores)
    assert np.allclose(again.scores, plain.score(s, progress=False).scores, atol=1e-6)
    other = RetrievalSet("needle", "test_256", {"a": "stock markets", "b": "interest rates"},
                         {"q": "where does the fox sleep?"}, {"q": {"a": 1}}, 256)
    with pytest.raises(pytest.fail.Exception, match="encoded again"):
        cached.score(other, progress=False)  # another corpus is another key


def test_plan_states_the_cost_from_an_earlier_run(tmp_path):
    old = tmp_path / "out" / "earlier"
    old.mkdir(parents=True)
    (old / "results.json").write_text(json.dumps({"systems": {"gemma3-270m-bidir": {
        "requested": "default", "tokens_per_second": 1000.0}}}))
    [s] = load_task(FIXTURE, "qmsum")
    s.corpus = {"d": "word " * 2700}  # 2,700 words = 3,600 tokens at 0.75 words per token
    st = Settings(models=["default"], baselines=[], data=str(FIXTURE), candidates=None, queries=None,
                  out=str(tmp_path / "out"))
    lines = plan_lines(st, [s], {"source": "fixture"})
    assert "2,700 words (about 3,600 tokens" in lines[2]
    assert lines[-1].startswith("cost: about 0.0 h for default at the 1,000 tokens/s measured in run earlier")


def test_cli_eval_writes_outputs(tmp_path, tiny_config):
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_config), "--baseline", "bm25", "--data", str(FIXTURE),
                                 "--lengths", "256,8192", "--out", str(out), "--run", "cli"])
    assert r.exit_code == 0, r.output
    assert "profile quick: tasks passkey, needle, narrativeqa, qmsum, summ_screen_fd, 2wikimqa" in r.output
    assert "| **tiny** (measured) | longretr |" in r.output and "| **bm25** (measured) | bm25 |" in r.output
    assert {p.name for p in (out / "cli").iterdir()} == {"results.json", "table.md", "acc_vs_length.png", "runs"}
    assert "not run" not in (out / "cli" / "table.md").read_text()  # every column was: no note says otherwise


@pytest.mark.parametrize("args, message", [
    (["--lengths", "300"], "LongEmbed's context lengths are 256"),
    (["--tasks", "qmsum"], "need --data"),
    (["--candidates", "2", "--queries", "5"], "--queries (5) cannot exceed --candidates (2)"),
    (["--baseline", "colbert"], "unknown baseline(s) ['colbert']"),
    (["--data", "/nonexistent/longembed"], "no such folder"),
    (["--run", "../escape"], "use letters, digits"),
])
def test_cli_eval_rejects_bad_input(tmp_path, args, message):
    r = CliRunner().invoke(app, ["eval", "--model", "default", "--out", str(tmp_path), *args])
    assert r.exit_code == 2 and message in r.output
    assert not (tmp_path / "home").exists()  # refused before any set was generated or model loaded


def test_cli_eval_checks_model_configs_first(tmp_path):
    r = CliRunner().invoke(app, ["eval", "--model", "nonexistent-config", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "model config 'nonexistent-config' not found" in r.output
    assert not (tmp_path / "home").exists()


def _read_trec(path):
    run = {}
    for line in path.read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, []).append((doc, float(score)))
    return run


@pytest.mark.parametrize("own_fusion_scores", [False, True])
def test_every_model_also_gets_a_hybrid_row_fusing_it_with_bm25(tmp_path, tiny_config, filler, monkeypatch,
                                                                 own_fusion_scores):
    from longretr.fusion import DEFAULT_RANKING, fuse

    seen = {}
    if own_fusion_scores:  # a scorer's fusion_scores, where it has them, are what hybrid fuses (here: random ones)
        score = DenseScorer.score

        def with_fusion_scores(self, s, progress=True):
            scored = score(self, s, progress)
            fusion = np.random.default_rng(0).random(scored.scores.shape).astype(np.float32)
            seen.update({q: sorted(zip(s.doc_ids, row.tolist()), key=lambda t: -t[1])
                         for q, row in zip(s.queries, fusion)})
            return replace(scored, fusion_scores=fusion)

        monkeypatch.setattr(DenseScorer, "score", with_fusion_scores)
    st = Settings(models=[str(tiny_config)], baselines=["bm25"], tasks=["passkey"], lengths=(256,),
                  candidates=4, queries=4, filler=str(filler), out=str(tmp_path / "out"), run="modes")
    results, paths = evaluate(st, log=lambda *_: None, progress=False)
    assert list(results["systems"]) == ["tiny", "tiny+hybrid", "bm25"]
    hybrid = results["systems"]["tiny+hybrid"]
    assert hybrid["describe"]["kind"] == "hybrid" and hybrid["describe"]["fusion"] == DEFAULT_RANKING["fusion"]
    runs = paths["json"].parent / "runs"
    dense, lexical = _read_trec(runs / "tiny" / "passkey.trec"), _read_trec(runs / "bm25" / "passkey.trec")
    dense = seen or dense
    expected = {q: fuse(dense[q], lexical[q], 100, DEFAULT_RANKING["fusion"], DEFAULT_RANKING["weight"],
                        DEFAULT_RANKING["rrf_k"]) for q in dense}
    written = _read_trec(runs / "tiny+hybrid" / "passkey.trec")
    assert {q: [d for d, _ in hits] for q, hits in written.items()} == {q: [d for d, _ in hits]
                                                                         for q, hits in expected.items()}
    assert all(np.allclose([x for _, x in written[q]], [x for _, x in expected[q]], atol=1e-4) for q in expected)
    assert "tiny+hybrid" in paths["table"].read_text()


def test_cli_eval_refuses_zero_candidates_and_queries(tmp_path):
    """0 was read as "not given" and replaced by the profile's 8, silently."""
    args = ["eval", "-b", "bm25", "--tasks", "passkey", "--lengths", "256", "--out", str(tmp_path)]
    for flag, value, message in [("--candidates", "0", "--candidates must be at least 2"),
                                 ("--candidates", "1", "every system ranks it first"),  # chance would be 100%
                                 ("--queries", "0", "must be at least 1")]:
        result = CliRunner().invoke(app, [*args, flag, value])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output


def test_a_rerun_of_the_same_name_says_it_replaced_the_earlier_one(tmp_path):
    st = Settings(models=[], baselines=["bm25"], tasks=["narrativeqa"], candidates=None, queries=None,
                  data=str(FIXTURE), out=str(tmp_path / "out"), run="same")
    lines: list[str] = []
    evaluate(st, log=lines.append, progress=False)
    assert not any("replaced" in line for line in lines)
    evaluate(st, log=lines.append, progress=False)
    assert any("replaced the earlier run 'same'" in line for line in lines), lines


def test_a_failed_rerun_leaves_the_earlier_run_of_that_name_whole(tmp_path):
    st = Settings(models=[], baselines=["bm25"], tasks=["narrativeqa"], candidates=None, queries=None,
                  data=str(FIXTURE), out=str(tmp_path / "out"), run="same")
    _, paths = evaluate(st, log=lambda *_: None, progress=False)
    folder = paths["json"].parent
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    class Broken:  # scores nothing: fails after bm25 has written its TREC runs
        def __init__(self, *_):
            raise RuntimeError("broken baseline")

    from longretr.evaluate import runner

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(runner.BASELINES, "broken", Broken)
        with pytest.raises(RuntimeError, match="broken baseline"):
            evaluate(replace(st, baselines=["bm25", "broken"], seed=1, tasks=["qmsum"]), log=lambda *_: None,
                     progress=False)
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    with pytest.raises(ValueError, match="dots alone"):
        evaluate(replace(st, run=".."), log=lambda *_: None, progress=False)
