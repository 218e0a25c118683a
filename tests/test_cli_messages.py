"""What the command line says to a user: a model found by the name other commands show, `longretr models` listing
without loading torch, option names in errors, and counts in the right number. No model is loaded."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from longretr import cli
from longretr.catalog import ModelEntry, format_table, mark_shadowed
from longretr.config import REPO_CONFIGS, load_config


def _configs(folder: Path, **files: str) -> None:
    """./configs/NAME.toml (NAME with "-" for "_") declaring the given name ("" for none)."""
    (folder / "configs").mkdir(exist_ok=True)
    for stem, name in files.items():
        declared = f'name = "{name}"\n' if name else ""
        (folder / "configs" / f"{stem.replace('_', '-')}.toml").write_text(f'{declared}backbone = "nobody/{stem}"\n')


def test_a_model_is_found_by_the_name_its_config_declares(tmp_path, monkeypatch):
    # `info`, `serve` and the manifest call the shipped default by its declared name; --model took only "default"
    assert load_config("gemma3-270m-diffembed-cpu2-spans") == load_config("default")
    monkeypatch.chdir(tmp_path)
    _configs(tmp_path, mine="my-model", other="taken", taken="")
    assert load_config("my-model").backbone == "nobody/mine"
    assert load_config("taken").backbone == "nobody/taken"  # a file's name wins over a name declared in another
    with pytest.raises(FileNotFoundError, match="no config in configs or .* is named so"):
        load_config("nobody-declares-this")
    with pytest.raises(FileNotFoundError, match=r"looked at my-model\.toml\)$"):
        load_config("my-model.toml")  # a path is a path


def test_a_name_two_configs_declare_is_refused_naming_both(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _configs(tmp_path, one="twin", two="twin")
    (tmp_path / "configs" / "broken.toml").write_text("name = [")  # skipped by the look-up, not fatal
    with pytest.raises(ValueError, match=r"'twin' is declared by 2 configs: configs/one\.toml, configs/two\.toml"):
        load_config("twin")


def test_models_shows_the_declared_name_and_what_it_loads():
    shipped = str(REPO_CONFIGS / "default.toml")
    entries = [ModelEntry(config=shipped, name="gemma3-270m-diffembed-cpu2-spans", backbone="b", max_tokens=8),
               ModelEntry(config="configs/plain.toml", name="plain", backbone="b", max_tokens=8)]
    rows = format_table(entries).splitlines()
    assert rows[1].startswith("default (gemma3-270m-diffembed-cpu2-spans) ") and rows[2].startswith("plain ")
    entries = [ModelEntry(config="configs/a.toml", name="b"), ModelEntry(config="configs/b.toml", name="b"),
               ModelEntry(config="configs/c.toml", name="twin"), ModelEntry(config="configs/d.toml", name="twin")]
    mark_shadowed(entries)
    assert [e.error for e in entries] == ["--model b loads configs/b.toml, the file of that name", "",
                                          "--model twin is refused: 2 configs are named so",
                                          "--model twin is refused: 2 configs are named so"]


def test_the_cli_and_the_indexer_import_no_torch():
    # torch and transformers take 4-5 s to import: `info`, `show`, lexical search and an `index` run with nothing to
    # encode need neither (the embedder imports them when a model is loaded)
    code = "import sys, longretr.cli, longretr.indexer; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _models(tmp_path: Path, *args: str) -> tuple[str, str]:
    """`longretr models ARGS` in a fresh interpreter (empty $LONGRETR_HOME and HF cache): its output, and which of
    torch and transformers it imported."""
    code = ("import sys\nfrom longretr.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "print(sorted({'torch', 'transformers'} & set(sys.modules)), file=sys.stderr)")
    env = {**os.environ, "LONGRETR_HOME": str(tmp_path / "home"), "HF_HUB_CACHE": str(tmp_path / "hub")}
    done = subprocess.run([sys.executable, "-c", code, "models", *args], capture_output=True, text=True, env=env,
                          cwd=tmp_path, check=True)
    return done.stdout, done.stderr.splitlines()[-1]


def test_models_imports_no_torch_and_counts_a_checkpoint_once(tmp_path):
    # `longretr models` took 5-9 s on a 2-core CPU, nearly all importing torch and transformers
    out, imported = _models(tmp_path)
    assert imported == "[]" and out.startswith("config ") and "\ndefault (" in out, out
    # a checkpoint's parameters are counted on the meta device (torch) once, then read from $LONGRETR_HOME's cache
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 2}))
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.toml").write_text(f"backbone = '{tmp_path / 'tiny'}'\n")
    first, imported = _models(tmp_path, "--configs", "configs", "--json")
    assert json.loads(first)[0]["parameters"] == 3632 and "torch" in imported, first
    again, imported = _models(tmp_path, "--configs", "configs", "--json")
    assert again == first and imported == "[]"


def test_fusion_errors_name_the_option(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a document\n")
    for option, value, message in [("--rrf-k", "0", "rrf_k must be > 0 and finite (--rrf-k), got 0"),
                                   ("--weight", "2", "(--weight, the dense list's share), got 2"),
                                   ("--fusion", "sum", "fusion method 'sum' (--fusion)")]:
        r = CliRunner().invoke(cli.app, ["index", str(corpus), "--index", str(tmp_path / "idx"), option, value])
        assert r.exit_code == 2 and message in " ".join(r.output.split()), r.output  # before any model loads


def test_counts_take_the_number_of_their_noun(tmp_path, monkeypatch, capsys):
    assert [cli._count(n, "document") for n in (0, 1, 2)] == ["0 documents", "1 document", "2 documents"]
    import longretr.indexer

    monkeypatch.setattr(longretr.indexer, "remove_documents", lambda index, ids: {"removed": 1, "count": 4,
                                                                                  "version": 3})
    r = CliRunner().invoke(cli.app, ["rm", "a.txt", "--index", str(tmp_path)])
    assert r.exit_code == 0 and r.output == f"{tmp_path}: removed 1 document, 4 left (version 3)\n", r.output
    run = tmp_path / "run.jsonl"
    cli._write_batch([("q1", "zip archives")], [[]], run, None)
    assert capsys.readouterr().err == f"wrote the results of 1 query to {run}\n"
    cli._write_batch([("q1", "zip"), ("q2", "tar")], [[], []], run, None)
    assert capsys.readouterr().err == f"wrote the results of 2 queries to {run}\n"


def test_a_training_run_folder_is_a_model(tmp_path):
    # `--model RUN` and `--model RUN/adapter` were "not found"; RUN/adapter/model.toml is what a run writes
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "model.toml").write_text('name = "trained"\nbackbone = "nobody/base"\n')
    assert load_config(run).name == load_config(run / "adapter").name == "trained"
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"looked at .*empty/model\.toml, .*empty/adapter/model\.toml"):
        load_config(tmp_path / "empty")


def test_a_bare_hub_id_is_not_taken_for_a_missing_folder(tmp_path):
    # "gpt2" (no owner) was refused as "no such folder" before any hub look-up
    from longretr.families import CheckpointError, checkpoint_file, looks_like_path

    assert not looks_like_path("gpt2") and not looks_like_path("google/gemma-3-270m")
    assert looks_like_path("./models/mine") and looks_like_path("models/tiny/v2")
    checkpoint_file("gpt2", "config.json", local_only=True)  # a look-up in the HF cache: raised "no such folder"
    with pytest.raises(CheckpointError, match="no such folder"):
        checkpoint_file(str(tmp_path / "nowhere"), "config.json")
