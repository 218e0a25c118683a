"""`longretr eval` refusing bad input before it writes anything, stating chance from the sets it ran, and leaving
nothing behind when it fails or is stopped."""

import json
import os
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longretr.cli import app
from longretr.evaluate import runner
from longretr.evaluate.data import DataError, load_task, parse_lengths, resolve_data
from longretr.evaluate.runner import Settings, evaluate

FIXTURE = Path(__file__).parent / "data" / "longembed"


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LONGRETR_HOME", str(tmp_path / "home"))  # the synthetic-set cache


@pytest.mark.parametrize("args, message", [
    (["--lengths", ""], "--lengths '': LongEmbed's context lengths are"),  # ran the whole profile
    (["--lengths", "256,512,256"], "--lengths '256,512,256': 256 given more than once"),  # a duplicate doc_id error
    (["--tasks", ","], "--tasks ',': no task named"),  # ran nothing, wrote an empty run, exit 0
    (["--tasks", ""], "--tasks '': no task named"),
    (["--no-baselines"], "--no-baselines and --baseline bm25 contradict"),  # the -b was dropped silently
    (["--dtype", "float64"], "--dtype 'float64': expected auto or one of"),  # failed after the sets were built
    (["-b", "minilm", "--minilm-chunk", "4"], "--minilm-chunk must be between 8 and 512"),  # after the model ran
    (["--run", ".hidden"], "--run '.hidden'"),  # a hidden run, named like the work folders of another
    (["--candidates", "101", "--queries", "2"], "--candidates 101: regenerated needle sets have at most 100"),
    (["--data", ""], "--data '': give a local copy"),  # read as no --data, then failed on a missing task folder
    (["--out", "{file}"], "is not a folder"),  # a traceback, exit 1
    (["--tasks", "passkey", "--filler", "{file}"], "this run has no needle task"),  # ignored without a word
    (["--tasks", "needle", "--data", str(FIXTURE), "--filler", "{file}"], "has published data (--data)"),
])
def test_cli_eval_refuses_bad_input_on_one_line_before_writing_anything(tmp_path, tiny_config, args, message):
    out = tmp_path / "out"
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    args = [a.replace("{file}", str(afile)) for a in args]
    base = ["eval", "-m", str(tiny_config), "-b", "bm25", "--lengths", "256", "--candidates", "2", "--queries", "1",
            "--out", str(out)]
    r = CliRunner().invoke(app, [*base, *args])
    assert r.exit_code == 2 and message in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "home").exists()  # no set generated
    assert not out.exists() or not any(out.iterdir())  # no run folder, not even a hidden one
    assert afile.read_text() == "not a folder"


def test_lengths_are_sorted():
    """'512,256' made its own cache key for the same sets, and table columns out of order."""
    assert parse_lengths("8192,256,1024") == (256, 1024, 8192)


def test_jsonl_that_is_not_utf8_is_refused_with_file_and_line(tmp_path):
    root = tmp_path / "le"
    shutil.copytree(FIXTURE, root)
    with (root / "qmsum" / "corpus.jsonl").open("ab") as f:
        f.write(b'{"doc_id": "x", "text": "caf\xe9"}\n')  # Latin-1: was a bare codec error, no file named
    with pytest.raises(DataError, match=r"qmsum/corpus.jsonl line 4: not UTF-8"):
        load_task(root, "qmsum")


def test_a_hub_failure_is_one_line(monkeypatch):
    def offline(**kwargs):
        raise OSError("Cannot reach the hub.\nCheck your connection and try again.")

    monkeypatch.setattr("huggingface_hub.snapshot_download", offline)
    with pytest.raises(DataError) as e:
        resolve_data("dwzhu/LongEmbed", ["passkey"])
    assert "\n" not in str(e.value) and "hub. Check your connection" in str(e.value)


def test_chance_is_stated_from_the_sets_as_run(tmp_path, monkeypatch):
    """The fixture has 3 candidates per length; with the quick profile's --candidates 8 the table and the plot said
    12.5%, and with --full ('as published') they stated no chance at all. It is 1 in 3."""
    from matplotlib.axes import Axes

    from longretr.evaluate.report import chance_by_length

    lines = []
    axhline = Axes.axhline
    monkeypatch.setattr(Axes, "axhline", lambda ax, y=0, *a, **k: lines.append(y) or axhline(ax, y, *a, **k))
    st = Settings(models=[], baselines=["bm25"], tasks=["passkey"], lengths=(256, 8192), candidates=8, queries=8,
                  data=str(FIXTURE), out=str(tmp_path / "out"), run="chance")
    for candidates in (8, None):
        results, paths = evaluate(replace(st, candidates=candidates, queries=candidates), log=lambda *_: None,
                                  progress=False)
        assert [s["chance"] for s in results["data"]["sets"]] == [33.33, 33.33]
        assert chance_by_length(results, "passkey") == {256: 33.33, 8192: 33.33}
        assert ("3 candidate documents and 2 queries per length (LongEmbed: 100 and 50; chance Acc@1 here 33.3%)"
                in paths["table"].read_text())
        assert lines[-1] == 33.33  # the plot's chance line


class _Stop:
    """A baseline that stops the run once bm25 has written its TREC runs."""

    def __init__(self, *_):
        raise KeyboardInterrupt


def test_a_stopped_run_leaves_no_work_folder(tmp_path):
    st = Settings(models=[], baselines=["bm25", "stop"], tasks=["qmsum"], candidates=None, queries=None,
                  data=str(FIXTURE), out=str(tmp_path / "out"), run="stopped")
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(runner.BASELINES, "stop", _Stop)
        with pytest.raises(KeyboardInterrupt):
            evaluate(st, log=lambda *_: None, progress=False)
    assert list((tmp_path / "out").iterdir()) == []  # the hidden .stopped.partial was left behind


class _Terminate:
    def __init__(self, *_):
        os.kill(os.getpid(), signal.SIGTERM)


def test_cli_eval_stopped_by_sigterm_removes_its_unfinished_run(tmp_path, tiny_config):
    def not_handled(*_):  # without eval's own handler, SIGTERM would end the test process
        raise RuntimeError("eval left SIGTERM to the default handler")

    previous = signal.signal(signal.SIGTERM, not_handled)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(runner.BASELINES, "terminate", _Terminate)
            r = CliRunner().invoke(app, ["eval", "-m", str(tiny_config), "-b", "bm25", "-b", "terminate", "--data",
                                         str(FIXTURE), "--tasks", "qmsum", "--out", str(tmp_path / "out")])
        assert signal.getsignal(signal.SIGTERM) is not_handled  # restored after the run
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert r.exit_code == 128 + signal.SIGTERM, (r.output, r.exception)
    assert "stopped by SIGTERM" in r.output
    assert list((tmp_path / "out").iterdir()) == []


def test_a_config_name_cannot_put_trec_runs_outside_the_run_folder(tmp_path, tiny_config):
    """A system's TREC folder is its name: a config named "../../escape" wrote runs/../../escape/ beside the runs."""
    config = tmp_path / "escape.toml"
    config.write_text(tiny_config.read_text().replace('name = "tiny"', 'name = "../../escape"'))
    out = tmp_path / "out"
    st = Settings(models=[str(config)], baselines=[], tasks=["qmsum"], candidates=None, queries=None,
                  data=str(FIXTURE), out=str(out), run="named")
    results, _ = evaluate(st, log=lambda *_: None, progress=False)
    assert {p.relative_to(out).parts[0] for p in out.rglob("*")} == {"named"}
    assert sorted(p.name for p in (out / "named" / "runs").iterdir()) == sorted([*results["systems"], "qrels"])


def test_the_cost_estimate_skips_results_files_of_another_shape(tmp_path):
    """Any results.json under --out is read for throughput; one that was a list, or had a number for a system,
    stopped the run with a traceback before it began."""
    from longretr.evaluate.runner import measured_rates

    out = tmp_path / "out"
    files = {"list": [1], "number": {"systems": {"default": 5}},
             "text": {"systems": {"default": {"tokens_per_second": "fast"}}},
             "good": {"systems": {"default": {"tokens_per_second": 9}}}}
    for name, content in files.items():
        (out / name).mkdir(parents=True)
        (out / name / "results.json").write_text(json.dumps(content))
    assert measured_rates(out, ["default"]) == {"default": (9, "good")}


def test_a_folder_given_as_filler_is_named_as_such(tmp_path):
    from longretr.evaluate.synth import FillerError, load_filler

    with pytest.raises(FillerError, match=f"needle filler {tmp_path} is not a file"):
        load_filler(tmp_path)


def test_trec_qids_stay_apart_when_the_data_repeats_them_across_lengths(tmp_path):
    # a copy whose passkey qids are the same at every length (q_0, q_1): one TREC file holds all lengths
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    for name in ("queries.jsonl", "qrels.jsonl"):
        path = data / "passkey" / name
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**r, "qid": r["qid"].split("_")[-1]}) + "\n" for r in rows))
    st = Settings(models=[], baselines=["bm25"], tasks=["passkey"], lengths=(256, 512), candidates=None,
                  queries=None, data=str(data), out=str(tmp_path / "out"), run="r")
    results, paths = evaluate(st, log=lambda *_: None, progress=False)
    assert results["systems"]["bm25"]["summary"]["passkey_le4k"] == 100.0
    lines = (paths["json"].parent / "runs" / "bm25" / "passkey.trec").read_text().splitlines()
    assert {line.split()[0] for line in lines} == {"0@256", "1@256", "0@512", "1@512"}
    qrels = (paths["json"].parent / "runs" / "qrels" / "passkey.qrels").read_text().splitlines()  # named alike
    assert sorted(qrels) == ["0@256 0 passkey_256_0 1", "0@512 0 passkey_512_0 1", "1@256 0 passkey_256_1 1",
                             "1@512 0 passkey_512_1 1"]
