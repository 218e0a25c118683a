"""What `longretr eval` reports is what it measured: ties broken against the system (and counted), TREC runs and qrels
that trec_eval scores to results.json's numbers, real tasks ranked against their whole corpus, sets with nothing to
score refused when read, the plot's pool stated, and a best-of-vectors model also scored by its whole vectors."""

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tiny_models import write_config
from typer.testing import CliRunner

from longretr.cli import app
from longretr.evaluate import runner
from longretr.evaluate.baselines import DenseScorer, Scored
from longretr.evaluate.data import DataError, load_task
from longretr.evaluate.metrics import acc_at_1, ndcg_at_k
from longretr.evaluate.report import trec_scores, write_trec
from longretr.evaluate.runner import Settings, break_ties, evaluate, plan_lines

FIXTURE = Path(__file__).parent / "data" / "longembed"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGRETR_HOME", str(tmp_path / "home"))  # the synthetic-set cache


def _write(folder: Path, name: str, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def tied_data(root: Path) -> Path:
    """A copy of the fixture plus a passkey length and a qmsum where queries match no candidate: BM25 scores every
    candidate 0, and the relevant one is first in corpus order (and first by doc id)."""
    shutil.copytree(FIXTURE, root)
    for task, length in (("passkey", 1024), ("qmsum", None)):
        extra = {} if length is None else {"context_length": length}
        docs = [{"doc_id": f"{task}_t{i}", "text": f"alpha beta gamma number {i}", **extra} for i in range(4)]
        queries = [{"qid": f"{task}_tq{i}", "text": "zebra okapi", **extra} for i in range(2)]
        qrels = [{"qid": f"{task}_tq{i}", "doc_id": f"{task}_t{i}", **extra} for i in range(2)]
        for name, rows in (("corpus.jsonl", docs), ("queries.jsonl", queries), ("qrels.jsonl", qrels)):
            path = root / task / name
            if length is None:  # the real task is only the tied set
                path.write_text("")
            with path.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
    return root


class _Flat(DenseScorer):
    """A dense 'model' that scores every candidate alike (no model loads)."""

    def __init__(self, model: str, dtype: str | None = None) -> None:
        self.name, self.has_other_vectors = "flat", False

    def describe(self) -> dict:
        return {"kind": "longretr"}

    def score(self, s, progress=True) -> Scored:
        return Scored(np.full((len(s.queries), len(s.corpus)), 0.25, dtype=np.float32), 0.0)

    def close(self) -> None:
        pass


def test_break_ties_puts_relevant_documents_last_within_equal_scores():
    run = {"q": [("a", 0.9), ("rel", 0.5), ("b", 0.5), ("c", 0.5), ("d", 0.1)], "r": [("x", 1.0), ("y", 0.5)]}
    ranked, tied = break_ties(run, {"q": {"rel": 1, "d": 0}, "r": {"y": 1}}, depth=4)
    assert [d for d, _ in ranked["q"]] == ["a", "b", "c", "rel"]  # cut after the tie was broken
    assert ranked["r"] == run["r"] and tied == 0
    _, tied = break_ties({"q": [("rel", 0.5), ("b", 0.5)], "r": [("y", 0.2)]}, {"q": {"rel": 1}, "r": {"y": 1}})
    assert tied == 1


def test_ties_are_broken_against_the_system_and_counted(tmp_path, tiny_config, monkeypatch):
    """Every candidate tied at 0 and the relevant one first in corpus order: scored Acc@1 100 and nDCG@10 1,
    dense, lexical and hybrid alike."""
    monkeypatch.setattr(runner, "DenseScorer", _Flat)
    st = Settings(models=[str(tiny_config)], baselines=["bm25"], tasks=["passkey", "qmsum"], lengths=(1024,),
                  candidates=None, queries=None, data=str(tied_data(tmp_path / "data")), out=str(tmp_path / "out"),
                  run="ties")
    results, paths = evaluate(st, log=lambda *_: None, progress=False)
    assert list(results["systems"]) == ["flat", "flat+hybrid", "bm25"]
    worst = 100 / math.log2(5)  # the relevant document fourth of four
    for system in results["systems"].values():
        assert system["scores"] == {"passkey": {"1024": 0.0}, "qmsum": pytest.approx(worst, abs=0.01)}
        assert [s["tied_at_1"] for s in system["sets"]] == [2, 2] and system["tied_at_1"] == 4
    assert "Queries whose rank 1 was a tie (`tied_at_1` in results.json): flat 4, flat+hybrid 4, bm25 4." in (
        paths["table"].read_text())


def test_written_trec_scores_strictly_decrease_along_the_ranking():
    assert trec_scores([0.5000004, 0.5000001, 0.5, 0.2, 0.2, -0.3]) == [
        "0.500000", "0.499999", "0.499998", "0.200000", "0.199999", "-0.300000"]
    assert trec_scores([2.0, 3.0]) == ["2.000000", "1.999999"]  # never out of the given order


def _read_run(path: Path) -> dict[str, list[tuple[str, float]]]:
    """A TREC run as trec_eval reads it: each query's lines sorted by score, ties by docno descending."""
    run: dict[str, list[tuple[str, float]]] = {}
    for line in path.read_text().splitlines():
        qid, q0, doc, rank, score, _ = line.split()
        assert q0 == "Q0" and int(rank) == len(run.get(qid, [])) + 1
        run.setdefault(qid, []).append((doc, float(score)))
    for qid, hits in run.items():
        scores = [s for _, s in hits]
        assert all(a > b for a, b in zip(scores, scores[1:])), (path, qid, scores)
        run[qid] = sorted(sorted(hits, key=lambda h: h[0], reverse=True), key=lambda h: -h[1])
    return run


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text().splitlines():
        qid, zero, doc, grade = line.split()
        assert zero == "0"
        qrels.setdefault(qid, {})[doc] = int(grade)
    return qrels


def test_trec_runs_and_qrels_reproduce_results_json(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(runner, "DenseScorer", _Flat)
    root = tied_data(tmp_path / "data")
    tasks = ["passkey", "qmsum", "narrativeqa"]
    st = Settings(models=[str(tiny_config)], baselines=["bm25"], tasks=tasks, lengths=(256, 1024), candidates=None,
                  queries=None, data=str(root), out=str(tmp_path / "out"), run="trec")
    results, paths = evaluate(st, log=lambda *_: None, progress=False)
    folder = paths["json"].parent
    for task in tasks:
        qrels = _read_qrels(folder / "runs" / "qrels" / f"{task}.qrels")
        sets = load_task(root, task, (256, 1024))
        assert set(qrels) == {q for s in sets for q in s.queries}
        for name, system in results["systems"].items():
            run = _read_run(folder / "runs" / name / f"{task}.trec")
            for s, row in zip(sets, [r for r in system["sets"] if r["task"] == task]):
                part = {q: qrels[q] for q in s.queries}
                value = acc_at_1(run, part) if row["metric"] == "acc@1" else ndcg_at_k(run, part, 10)
                assert round(100 * value, 2) == row["value"], (name, task, s.split)


def test_write_trec_keeps_the_order_it_is_given(tmp_path):
    path = tmp_path / "r.trec"
    write_trec(path, {"q": [("b", 0.5), ("a", 0.5), ("c", 0.1)]}, "t")
    assert [line.split()[2:5] for line in path.read_text().splitlines()] == [
        ["b", "1", "0.500000"], ["a", "2", "0.499999"], ["c", "3", "0.100000"]]


def real_task(root: Path, docs: int = 20, queries: int = 10) -> Path:
    folder = root / "qmsum"
    _write(folder, "corpus.jsonl", [{"doc_id": f"d{i}", "text": f"topic{i} words here and there"} for i in range(docs)])
    _write(folder, "queries.jsonl", [{"qid": f"q{i}", "text": f"topic{i}"} for i in range(queries)])
    _write(folder, "qrels.jsonl", [{"qid": f"q{i}", "doc_id": f"d{i}"} for i in range(queries)])
    return root


def test_the_quick_profile_cuts_real_tasks_to_queries_not_candidates(tmp_path, monkeypatch):
    """Cut to 8 candidates as well, every relevant document was in the top 10 (nDCG@10 inflated)."""
    st = Settings(models=[], baselines=["bm25"], tasks=["qmsum"], data=str(real_task(tmp_path / "data")),
                  out=str(tmp_path / "out"), run="quick")
    assert (st.candidates, st.queries) == (8, 8)  # the quick profile
    lines: list[str] = []
    results, paths = evaluate(st, log=lines.append, progress=False)
    [info] = results["data"]["sets"]
    assert (info["documents"], info["queries"]) == (20, 8)  # all candidates, the profile's queries
    assert (info["documents_in_data"], info["queries_in_data"]) == (20, 10)
    assert "Real tasks run on fewer than the published data holds: QMS 20 of 20 candidates and 8 of 10 queries." in (
        paths["table"].read_text())
    assert any(line.startswith("real tasks: every query is ranked against the whole corpus") for line in lines)
    full = replace(st, candidates=None, queries=None, run="full")
    results, paths = evaluate(full, log=lambda *_: None, progress=False)
    assert "Real tasks run on fewer" not in paths["table"].read_text()


def test_the_plan_says_when_the_real_tasks_make_a_quick_run_long(tmp_path, monkeypatch):
    [s] = load_task(real_task(tmp_path / "data"), "qmsum")
    st = Settings(models=[], baselines=["bm25"], tasks=["qmsum"], data=str(tmp_path / "data"), out=str(tmp_path))
    assert "an hour or more" not in " ".join(plan_lines(st, [s], {"source": "x"}))
    monkeypatch.setattr(runner, "QUICK_REAL_TOKENS", 10)
    assert "(long: an hour or more per model on a CPU, in the quick profile too)" in " ".join(
        plan_lines(st, [s], {"source": "x"}))


def zero_queries_copy(root: Path) -> Path:
    shutil.copytree(FIXTURE, root)
    for name in ("queries.jsonl", "qrels.jsonl"):
        path = root / "passkey" / name
        path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                                if '"context_length": 512' not in line))
    return root


def test_a_length_with_documents_but_no_queries_is_refused_when_read(tmp_path, tiny_config, monkeypatch):
    """It crashed after the models had run: 'need at least one array to stack', no file named."""
    root = zero_queries_copy(tmp_path / "data")
    with pytest.raises(DataError, match=r"passkey \(test_512\): no judged queries for this set"):
        load_task(root, "passkey", (256, 512))

    def no_model(*_, **__):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(runner, "DenseScorer", no_model)
    r = CliRunner().invoke(app, ["eval", "-m", str(tiny_config), "-b", "bm25", "--data", str(root), "--tasks",
                                 "passkey", "--lengths", "256,512", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and f"{root / 'passkey'} (test_512): no judged queries" in r.output, r.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("file, field, value", [("corpus.jsonl", "doc_id", None), ("queries.jsonl", "qid", 1.5),
                                                ("qrels.jsonl", "doc_id", True)])
def test_ids_that_are_not_strings_or_integers_are_refused_with_file_and_line(tmp_path, file, field, value):
    """A null doc_id was read as the document "None", then blamed on qrels.jsonl."""
    root = tmp_path / "data"
    shutil.copytree(FIXTURE, root)
    path = root / "qmsum" / file
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1][field] = value
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=rf"qmsum/{file} line 2: {field} {json.dumps(value)} is not a string or an "
                                        "integer"):
        load_task(root, "qmsum")


def test_integer_ids_are_read(tmp_path):
    folder = tmp_path / "data" / "qmsum"
    _write(folder, "corpus.jsonl", [{"doc_id": 1, "text": "a"}, {"doc_id": 2, "text": "b"}])
    _write(folder, "queries.jsonl", [{"qid": 7, "text": "a"}])
    _write(folder, "qrels.jsonl", [{"qid": 7, "doc_id": 2}])
    [s] = load_task(tmp_path / "data", "qmsum")
    assert s.qrels == {"7": {"2": 1}}


def test_the_plot_states_candidates_and_queries(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    titles: list[str] = []
    set_title = Axes.set_title
    monkeypatch.setattr(Axes, "set_title", lambda ax, label, *a, **k: titles.append(label) or set_title(ax, label,
                                                                                                        *a, **k))
    st = Settings(models=[], baselines=["bm25"], tasks=["passkey", "needle"], lengths=(256, 8192), candidates=None,
                  queries=None, data=str(FIXTURE), out=str(tmp_path / "out"), run="plot")
    evaluate(st, log=lambda *_: None, progress=False)
    assert titles == ["passkey (published data; 3 candidates, 2 queries per length)",
                      "needle (published data; 3 candidates, 2 queries per length)"]


def test_a_model_with_lead_and_span_vectors_is_also_scored_by_its_whole_vectors(tmp_path, tiny_gemma, monkeypatch):
    """Its dense scores are the best of whole, lead and span vectors; the row beside them uses the whole vectors, from
    the same encoding."""
    config = write_config(tmp_path, tiny_gemma, name="spans", max_tokens=512, lead_tokens=8, span_tokens=8)
    encodes: list[int] = []
    encode = DenseScorer.score
    monkeypatch.setattr(DenseScorer, "score", lambda self, s, progress=True: encodes.append(1) or encode(self, s,
                                                                                                       progress))
    labels: list[str] = []
    from matplotlib.axes import Axes

    plot = Axes.plot
    monkeypatch.setattr(Axes, "plot", lambda ax, *a, **k: labels.append(k.get("label")) or plot(ax, *a, **k))
    st = Settings(models=[str(config)], baselines=[], tasks=["passkey", "qmsum"], lengths=(256,), candidates=None,
                  queries=None, data=str(FIXTURE), out=str(tmp_path / "out"), run="whole")
    results, paths = evaluate(st, log=lambda *_: None, progress=False)
    assert list(results["systems"]) == ["spans", "spans-whole-vector", "spans+hybrid"]
    assert len(encodes) == 2  # one encoding per set, for all three rows
    whole = results["systems"]["spans-whole-vector"]
    assert whole["describe"]["kind"] == "longretr, whole vector" and whole["describe"]["dense"] == "spans"
    assert "| **spans-whole-vector** (measured) | longretr, whole vector |" in paths["table"].read_text()
    assert "spans-whole-vector" in labels

    scorer = DenseScorer(str(config))
    e = scorer.embedder
    for s in (load_task(FIXTURE, "passkey", (256,))[0], load_task(FIXTURE, "qmsum")[0]):
        docs = e.encode_documents(list(s.corpus.values()), progress=False)
        assert docs.extra  # long enough for leads and spans: the best of them is not the whole vector
        want = e.encode_queries(list(s.queries.values())) @ docs.vectors.T
        got = scorer.score(s, progress=False)
        assert np.allclose(got.whole_scores, want, atol=1e-5) and not np.allclose(got.scores, want, atol=1e-5)
        run = _read_run(paths["json"].parent / "runs" / "spans-whole-vector" / f"{s.task}.trec")
        for q, row in zip(s.queries, want):
            assert run[q][0] == (s.doc_ids[int(np.argmax(row))], pytest.approx(float(row.max()), abs=2e-6))


def test_a_model_without_other_vectors_gets_no_whole_vector_row(tiny_config):
    scorer = DenseScorer(str(tiny_config))
    s = load_task(FIXTURE, "qmsum")[0]
    assert not scorer.has_other_vectors and scorer.score(s, progress=False).whole_scores is None
