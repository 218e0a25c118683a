"""Training fixes from an audit: model config changes on resume, a torn log line, Ctrl-C during a save, huge texts,
empty negatives, bad config bytes, data checked before the model loads, the card, warnings, the resume line."""

import json
import shutil
import signal
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from test_train import _cfg, _interrupt_at_step, _write_toml
from tiny_models import write_config

from longretr.train.data import read_triplets
from longretr.train.trainer import CHARS_PER_TOKEN, TrainConfig, Trainer, plot_loss, write_card

README = Path(__file__).parent.parent / "README.md"


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_resume_refuses_a_model_config_changed_under_the_same_path(tmp_path, tiny_gemma):
    """train.json kept only the model config's path: pooling and backbone edited in that TOML were resumed on."""
    cfg = _cfg(tmp_path, tiny_gemma, steps=2, save_every=1)
    Trainer(cfg).train(progress=False)
    model = Path(cfg.model)
    original = model.read_text()
    model.write_text(original.replace('pooling = "mean"', 'pooling = "last"'))
    with pytest.raises(ValueError, match=r"model config .*tiny\.toml: pooling = 'last' \(the run has 'mean'\)"):
        Trainer(replace(cfg, steps=3)).train(resume=True, progress=False)
    assert json.loads((tmp_path / "run" / "train.json").read_text())["model_config"]["pooling"] == "mean"
    # a run saved before train.json kept the model config resumes as before
    train_json = tmp_path / "run" / "train.json"
    train_json.write_text(json.dumps({k: v for k, v in json.loads(train_json.read_text()).items()
                                      if k != "model_config"}))
    model.write_text(original)
    assert Trainer(replace(cfg, steps=3)).train(resume=True, progress=False)["steps"] == 3


def test_resume_refuses_a_model_configs_adapter_whose_files_changed(tmp_path, tiny_gemma):
    """Same settings, same adapter path, other weights: told apart by the fingerprint, which hashes the files."""
    from safetensors.torch import load_file, save_file

    Trainer(_cfg(tmp_path, tiny_gemma, steps=1, output=str(tmp_path / "a"))).train(progress=False)
    adapter = tmp_path / "a" / "adapter"
    on_a = write_config(tmp_path, tiny_gemma, name="on-a", adapter=str(adapter))
    cfg = _cfg(tmp_path, tiny_gemma, model=str(on_a), steps=2, save_every=1, output=str(tmp_path / "top"))
    Trainer(cfg).train(progress=False)
    moved = shutil.copytree(adapter, tmp_path / "moved")  # the same files elsewhere (another checkout): resumed
    write_config(tmp_path, tiny_gemma, name="on-a", adapter=str(moved))
    assert Trainer(replace(cfg, steps=3)).train(resume=True, progress=False)["steps"] == 3
    weights = moved / "adapter_model.safetensors"
    save_file({k: v * 2 for k, v in load_file(weights).items()}, weights)
    with pytest.raises(ValueError, match=r"on-a\.toml: its adapter files .* differ from the run's"):
        Trainer(replace(cfg, steps=4)).train(resume=True, progress=False)


def test_a_torn_last_log_line_is_dropped_and_any_other_bad_line_named(tmp_path, tiny_gemma, capsys):
    """A crash or a full disk mid-write leaves a partial last row: it blocked every --resume with a bare
    JSONDecodeError."""
    cfg = _cfg(tmp_path, tiny_gemma, steps=2, save_every=1)
    Trainer(cfg).train(progress=False)
    run = tmp_path / "run"
    log = run / "log.jsonl"
    rows = log.read_text()
    log.write_text(rows + '{"step": 3, "loss": 0.5')
    assert len(plot_loss(run).read_bytes()) > 0 and "last 2 steps" in write_card(run, cfg, 2, 1.0, []).read_text()
    capsys.readouterr()
    assert Trainer(replace(cfg, steps=3)).train(resume=True, progress=False)["steps"] == 3
    assert f"{log} line 3 is cut short" in capsys.readouterr().err
    assert _steps(run) == [1, 2, 3]
    log.write_text("not json\n" + log.read_text())  # not the last line: an error naming it, the run untouched
    with pytest.raises(ValueError, match=rf"{log} line 1: not a log row"):
        Trainer(replace(cfg, steps=4)).train(resume=True, progress=False)
    with pytest.raises(ValueError, match=rf"{log} line 1"):
        plot_loss(run)


def test_a_second_ctrl_c_while_the_checkpoint_is_written_does_not_cut_it_short(tmp_path, tiny_gemma, monkeypatch):
    """Two quick Ctrl-Cs: the second landed in the save the first asked for (the handler was already put back),
    leaving no checkpoint."""
    import os

    from typer.testing import CliRunner

    from longretr.cli import app

    path = _write_toml(tmp_path / "t.toml", _cfg(tmp_path, tiny_gemma, steps=40, save_every=100))
    save_lora = Trainer._save_lora

    def second_ctrl_c_mid_save(self, folder):
        if folder.name == ".checkpoint.tmp":
            os.kill(os.getpid(), signal.SIGINT)
        return save_lora(self, folder)

    previous = _interrupt_at_step(monkeypatch, 2)  # the first Ctrl-C
    monkeypatch.setattr(Trainer, "_save_lora", second_ctrl_c_mid_save)
    try:
        stopped = CliRunner().invoke(app, ["train", "--config", str(path)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.exit_code == 130, stopped.output
    assert "continue with: " in stopped.output and "stopped at once" not in stopped.output, stopped.output
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 2
    assert not (tmp_path / "run" / ".checkpoint.tmp").exists()


def test_a_ctrl_c_while_the_last_checkpoint_is_written_stops_the_run(tmp_path, tiny_gemma):
    """It said "stopping once it is saved", then the run went on to its validation (minutes) and exited 0."""
    import os

    from typer.testing import CliRunner

    from longretr.cli import app

    path = _write_toml(tmp_path / "t.toml", _cfg(tmp_path, tiny_gemma, steps=3, save_every=100))
    save_lora = Trainer._save_lora
    # handled as Python sets it up however pytest was started (as a background job it ignores SIGINT)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def ctrl_c_mid_last_save(self, folder):
        if folder.name == ".checkpoint.tmp":
            os.kill(os.getpid(), signal.SIGINT)
        return save_lora(self, folder)

    try:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(Trainer, "_save_lora", ctrl_c_mid_last_save)
            stopped = CliRunner().invoke(app, ["train", "--config", str(path)])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.exit_code == 130, stopped.output
    assert "interrupted at step 3 of 3" in stopped.output, stopped.output
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 3


def test_a_huge_text_is_cut_to_a_character_budget_before_tokenizing(tmp_path, tiny_gemma):
    """The tokenizer read all of a 20M-character text before cutting it to max length: 16-41 s and 5 GB a step."""
    trainer = Trainer(_cfg(tmp_path, tiny_gemma))
    tokenizer, seen = trainer.tokenizer, []

    def recording(texts, **kw):
        seen.extend(len(t) for t in texts)
        return tokenizer(texts, **kw)

    trainer.tokenizer = recording
    huge = "the quick brown fox " * 20_000  # 400k characters
    ids, mask = trainer._tokens([huge, "fox"], 16)
    assert max(seen) <= 16 * CHARS_PER_TOKEN
    whole = tokenizer([huge, "fox"], truncation=True, max_length=16, padding=True, return_tensors="pt")
    assert torch.equal(ids, whole["input_ids"]) and torch.equal(mask, whole["attention_mask"])  # same tokens


def test_empty_negatives_are_refused_with_their_line(tmp_path):
    """["", ""] trained on an empty document; "negative": "" was read as no negative."""
    good = '{"query": "fox", "positive": "the fox", "negative": "a dog"}\n'
    path = tmp_path / "t.jsonl"
    for row in ('{"query": "q", "positive": "p", "negatives": ["", ""]}',
                '{"query": "q", "positive": "p", "negatives": ["a dog", "  "]}',
                '{"query": "q", "positive": "p", "negative": ""}'):
        path.write_text(good + row + "\n")
        with pytest.raises(ValueError, match=r"t\.jsonl:2: negatives must be non-empty strings"):
            read_triplets(path)
    path.write_text(good + '{"query": "q", "positive": "p", "negative": null}\n{"query": "q", "positive": "p"}\n')
    assert [t.negatives for t in read_triplets(path)] == [["a dog"], [], []]  # none given: in-batch negatives only


def test_a_training_config_that_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'model = "caf\xe9"\n')
    with pytest.raises(ValueError, match=r"bad\.toml: not a readable TOML training config"):
        TrainConfig.from_toml(bad)


def test_data_problems_are_found_before_the_model_loads(tmp_path, tiny_gemma, monkeypatch):
    """An empty config loaded the default model (7.8 s, a 1.1 GB conversion) before saying it lists no data."""
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.toml: lists no data files"):
        TrainConfig.from_toml(empty)

    def no_loading(*args, **kw):
        raise AssertionError("the backbone was loaded before the data was checked")

    monkeypatch.setattr("longretr.train.trainer.load_backbone", no_loading)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "positive": ""}\n')
    for change, message in [({"data": [str(tmp_path / "nope.jsonl")]}, r"nope\.jsonl: no such data file"),
                            ({"data": [str(bad)]}, r"bad\.jsonl:1: query and positive"),
                            ({"val": [str(bad)]}, r"bad\.jsonl:1: query and positive"),
                            ({"data": []}, "lists no data files"),
                            ({"objective": "diffusion"}, r"toy\.jsonl:1: expected a JSON object with text")]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            Trainer(_cfg(tmp_path, tiny_gemma, **change))


def test_the_card_names_what_before_is_and_does_not_point_at_val_json(tmp_path, tiny_gemma):
    """The card's study command wrote over the run's own val.json in another format; in a stage-2 run its "before"
    is the model without the stage-1 adapter, which the card did not say."""
    Trainer(_cfg(tmp_path, tiny_gemma, steps=1, output=str(tmp_path / "stage1"))).train(progress=False)
    stage1 = str(tmp_path / "stage1" / "adapter")
    cfg = _cfg(tmp_path, tiny_gemma, steps=1, init_adapter=stage1, val=[str(tmp_path / "toy.jsonl")], val_queries=4,
               output=str(tmp_path / "stage2"))
    Trainer(cfg).train(progress=False)
    card = (tmp_path / "stage2" / "card.md").read_text()
    assert f"--out {tmp_path / 'stage2'}/val-study.json" in card and "/val.json" not in card, card
    assert f"Before: `{cfg.model}` without init_adapter `{stage1}`" in card, card
    assert "without init_adapter" not in (tmp_path / "stage1" / "card.md").read_text()


def test_training_prints_no_deprecation_warning_for_gradient_checkpointing(tmp_path, tiny_gemma):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(_cfg(tmp_path, tiny_gemma, gradient_checkpointing=True))
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]
    assert any(getattr(m, "gradient_checkpointing", False) for m in trainer.model.modules())  # still on


def test_resume_says_where_it_starts(tmp_path, tiny_gemma, capsys):
    cfg = _cfg(tmp_path, tiny_gemma, steps=2, save_every=1)
    Trainer(cfg).train(progress=False)
    capsys.readouterr()
    Trainer(replace(cfg, steps=3)).train(resume=True, progress=False)
    assert f"resuming {tmp_path / 'run'} from step 2 of 3" in capsys.readouterr().out


def test_readme_describes_the_cards_loss_as_the_card_gives_it(tmp_path, tiny_gemma):
    text = README.read_text()
    training = text[text.index("## Training"):]
    training = training[:training.index("\n## ", 1)]
    assert "final loss" not in training and "mean loss of the last 10 steps" in training
    cfg = _cfg(tmp_path, tiny_gemma, steps=1)
    Trainer(cfg).train(progress=False)
    assert "mean loss of the last 1 step:" in (tmp_path / "run" / "card.md").read_text()
