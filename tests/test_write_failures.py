"""A write that fails (a full disk) at each point where longretr writes: one clear line naming the file and the
problem, the last good version kept and searchable, the failed attempt's files removed, the writer lock released, and
a rerun after freeing space equal to a run that never failed. kill -9 and crashes are in test_lifecycle.py."""

import builtins
import errno
import fcntl
import os
import sys
import types
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import WORDS, write_config, write_corpus
from typer.testing import CliRunner

from longretr import backbone, store
from longretr.cli import app
from longretr.embedder import Embedder
from longretr.indexer import index_corpus, remove_documents
from longretr.lexical import LexicalIndex
from longretr.search import Searcher

NO_SPACE = "No space left on device"


def text(i: int) -> str:
    return f"doc {i}: " + " ".join(np.random.default_rng(i).choice(WORDS, 12))


FIRST = {f"d{i}.txt": text(i) for i in range(4)}  # version 1
# version 2: d0 changed, d3 gone, d4..d6 new
SECOND = {**{n: t for n, t in FIRST.items() if n != "d3.txt"}, "d0.txt": text(100),
          **{f"d{i}.txt": text(i) for i in range(4, 7)}}
QUERIES = [text(1), "fox archive json", text(5)]


class FullFile:
    """A file on a disk that fills up: half of the first write lands, then ENOSPC (a file of the kind given by a
    file name with no fileno, so shutil's copy writes through it too)."""

    def __init__(self, real, fileno: bool) -> None:
        self.real, self.has_fileno = real, fileno

    def write(self, data):
        self.real.write(data[: len(data) // 2])
        self.real.flush()
        raise OSError(errno.ENOSPC, NO_SPACE)

    def fileno(self) -> int:
        if not self.has_fileno:
            raise OSError("not a real file")
        return self.real.fileno()

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.real.close()


def fill_disk(monkeypatch, pattern: str, nth: int = 1, fileno: bool = False) -> list[str]:
    """From the nth file opened for writing whose name or folder's name matches `pattern` on, every such write fails
    with ENOSPC. Returns the paths it failed (the test checks the failure really happened there)."""
    real_open, failed, seen = builtins.open, [], [0]

    def fake_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        path = Path(str(file))
        if any(c in mode for c in "wax+") and any(fnmatch(p.name, pattern) for p in (path, path.parent)):
            seen[0] += 1
            if seen[0] >= nth:
                failed.append(str(path))
                return FullFile(f, fileno)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    return failed


def listing(folder: Path) -> list[str]:
    """The folder's files outside pending/ (the shards of a failed run are kept on purpose, for the next one)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if "pending" not in p.relative_to(folder).parts)


def results(folder: Path, embedder: Embedder) -> dict:
    searcher = Searcher(folder, embedder)
    return {mode: searcher.search(QUERIES, k=5, mode=mode) for mode in ("dense", "lexical", "hybrid")}


def lock_is_free(folder: Path) -> bool:
    with open(folder / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def the_error(output: str) -> str:
    """The CLI's one error line (progress bars share stderr)."""
    errors = [ln for ln in output.replace("\r", "\n").splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def cli(monkeypatch, embedder: Embedder, args: list[str]):
    monkeypatch.setattr("longretr.embedder.Embedder", lambda *a, **k: embedder)  # the fixture's, not a new load
    monkeypatch.setattr("longretr.indexer.LazyEmbedder", lambda *a, **k: embedder)  # (and its config, for `index`)
    return CliRunner().invoke(app, args)


def assert_same_index(got: Path, want: Path, embedder: Embedder) -> None:
    a, b = store.load(got), store.load(want)
    assert a.docs.equals(b.docs) and a.manifest["files"].keys() == b.manifest["files"].keys()
    vids = a.docs.column("vid").to_numpy()
    assert np.allclose(store.vectors_for(a.index, vids), store.vectors_for(b.index, vids), atol=1e-6)
    assert results(got, embedder) == results(want, embedder)


@pytest.fixture()
def notice(tmp_path, monkeypatch) -> Path:
    """The embedder's licence notice, as a GGUF package's cache has one."""
    path = tmp_path / "notice" / "GEMMA_NOTICE.txt"
    path.parent.mkdir()
    path.write_text("Gemma is provided under and subject to the Gemma Terms of Use.\n" * 50)
    monkeypatch.setattr(Embedder, "notice", property(lambda self: path))
    return path


# -- longretr index ----------------------------------------------------------------------------------------------------

POINTS = {  # what fails -> (the pattern of the file being written, the file the error names)
    "shard": (".shard-*", "pending/"),
    "pending model": (".model.json.*", "pending/"),
    "notice": ("*GEMMA_NOTICE.txt*", "GEMMA_NOTICE.txt"),
    "vectors": (".vectors-*", "vectors-000002.faiss"),
    "docs": (".docs-*", "docs-000002.parquet"),
    "lexical": (".lexical-*", "lexical-000002"),
    "ann": (".ann-*", "ann-000002.faiss"),
    "manifest": (".manifest.json.*", "manifest.json"),
}


@pytest.mark.parametrize("point", POINTS)
def test_a_full_disk_during_index_keeps_the_last_version_and_a_rerun_equals_an_uninterrupted_run(
        point, tmp_path, embedder, notice, monkeypatch):
    corpus, folder, reference = tmp_path / "corpus", tmp_path / "idx", tmp_path / "ref"
    write_corpus(corpus, FIRST)
    for f in (folder, reference):
        index_corpus(corpus, f, embedder, progress=False, index_type="hnsw")  # an ann file too
    before, found = listing(folder), results(folder, embedder)
    (corpus / "d3.txt").unlink()
    write_corpus(corpus, SECOND)

    pattern, named = POINTS[point]
    with monkeypatch.context() as m:
        failed = fill_disk(m, pattern, nth=2 if point == "shard" else 1)
        r = cli(m, embedder, ["index", str(corpus), "--index", str(folder), "--shard-tokens", "1"])
    assert failed, f"nothing matching {pattern} was written"
    assert r.exit_code == 2, r.output
    line = the_error(r.output)
    assert f"{folder}/{named}" in line and f"cannot write ({NO_SPACE})" in line, line
    assert f"{folder} is unchanged (version 1, 4 documents)" in line, line

    snap = store.load(folder)
    assert snap.manifest["version"] == 1 and snap.count == 4 and snap.ann is not None
    assert results(folder, embedder) == found
    assert listing(folder) == before  # no temp file, no part of version 2
    assert (folder / notice.name).read_bytes() == notice.read_bytes()  # not left half-overwritten
    shards = list((folder / "pending").rglob("*"))
    # only whole shards, and the model they are of
    assert all(p.is_dir() or fnmatch(p.name, "shard-*.npz") or p.name == "model.json" for p in shards), shards
    assert lock_is_free(folder)

    s = index_corpus(corpus, folder, embedder, progress=False)  # space freed
    # saved shards are reused (none before the model file that comes first)
    assert s.resumed == {"shard": 1, "pending model": 0}.get(point, 4) and s.resumed + s.encoded == 4
    index_corpus(corpus, reference, embedder, progress=False)  # the same two runs, never interrupted
    assert_same_index(folder, reference, embedder)
    assert not (folder / "pending").exists()


def test_the_first_run_on_a_full_disk_names_no_version(tmp_path, embedder, monkeypatch):
    corpus, folder = write_corpus(tmp_path / "corpus", FIRST), tmp_path / "idx"
    with monkeypatch.context() as m:
        fill_disk(m, ".docs-*")
        r = cli(m, embedder, ["index", str(corpus), "--index", str(folder)])
    assert r.exit_code == 2
    assert f"no index was written to {folder}" in the_error(r.output)
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "pending"]  # the encoded shards, for the next run


def test_a_pid_that_cannot_be_written_does_not_stop_a_writer(tmp_path, embedder, monkeypatch):
    """The pid in .lock only tells a second writer who holds it; the flock is the lock."""
    corpus, folder = write_corpus(tmp_path / "corpus", FIRST), tmp_path / "idx"
    with monkeypatch.context() as m:
        failed = fill_disk(m, ".lock", fileno=True)
        r = cli(m, embedder, ["index", str(corpus), "--index", str(folder)])
        assert failed and r.exit_code == 0, r.output
        r = cli(m, embedder, ["rm", "d1.txt", "--index", str(folder)])
    assert r.exit_code == 0, r.output
    assert store.load(folder).count == 3 and lock_is_free(folder)


# -- longretr rm -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern", [".vectors-*", ".lexical-*", ".manifest.json.*"])
def test_a_full_disk_during_rm_removes_nothing(pattern, tmp_path, embedder, monkeypatch):
    corpus, folder, reference = write_corpus(tmp_path / "corpus", FIRST), tmp_path / "idx", tmp_path / "ref"
    index_corpus(corpus, folder, embedder, progress=False)
    index_corpus(corpus, reference, embedder, progress=False)
    before, found = listing(folder), results(folder, embedder)
    with monkeypatch.context() as m:
        failed = fill_disk(m, pattern)
        r = cli(m, embedder, ["rm", "d1.txt", "d2.txt", "--index", str(folder)])
    assert failed and r.exit_code == 2, r.output
    line = the_error(r.output)
    assert f"cannot write ({NO_SPACE}); {folder} is unchanged (version 1, 4 documents)" in line, line
    assert store.load(folder).count == 4 and results(folder, embedder) == found
    assert listing(folder) == before and lock_is_free(folder)
    remove_documents(folder, ["d1.txt", "d2.txt"])
    remove_documents(reference, ["d1.txt", "d2.txt"])
    assert_same_index(folder, reference, embedder)


# -- the lexical index's own save --------------------------------------------------------------------------------------

def test_a_short_write_in_the_lexical_index_is_named_a_full_disk(tmp_path, monkeypatch):
    """numpy reports a full disk as "N requested and M written", with no errno."""
    from longretr import lexical

    def short_write(path, array, **kwargs):
        Path(path).write_bytes(b"\x93NUMPY" + bytes(100))
        raise OSError("33105 requested and 5616 written")

    monkeypatch.setattr(lexical.np, "save", short_write)
    target = tmp_path / "lexical-000002"
    with pytest.raises(OSError) as e:
        LexicalIndex.build(["a fox", "a dog"], [0, 1]).save(target)
    assert e.value.filename == str(target) and e.value.strerror.startswith(NO_SPACE)
    assert list(tmp_path.iterdir()) == []  # no temp folder left


# -- the default model's de-quantized cache ----------------------------------------------------------------------------

@pytest.fixture()
def gguf_package(tiny_gemma, tmp_path, monkeypatch) -> types.ModuleType:
    """A GGUF package as the default model's, whose conversion (tokenizer and weights read from the GGUF file) is
    stood in for by the tiny model: everything the cache gets is written by longretr's own code."""
    import transformers

    pkg = types.ModuleType("tiny_gguf_package")
    pkg.MODEL_NAME, pkg.EXPECTED_SHA256, pkg.calls = "tiny.gguf", "ab" * 32, 0

    def assemble(dest: Path) -> Path:
        pkg.calls += 1
        with open(dest, "wb") as f:
            f.write(b"GGUF" + bytes(100_000))
        return dest

    pkg.assemble = assemble
    tokenizer, lm = transformers.AutoTokenizer, transformers.Gemma3ForCausalLM
    monkeypatch.setattr(backbone, "AutoTokenizer", types.SimpleNamespace(
        from_pretrained=lambda *a, **k: tokenizer.from_pretrained(tiny_gemma)))
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", types.SimpleNamespace(
        from_pretrained=lambda *a, **k: lm.from_pretrained(tiny_gemma, dtype=torch.float32)))
    monkeypatch.setitem(sys.modules, pkg.__name__, pkg)
    monkeypatch.setenv("LONGRETR_HOME", str(tmp_path / "home"))
    return pkg


@pytest.mark.parametrize("pattern", ["tiny.gguf", "config.json", "model.safetensors", "tokenizer_config.json",
                                     "GEMMA_NOTICE.txt"])
def test_a_full_disk_while_caching_the_model_caches_nothing_and_a_rerun_converts(
        pattern, gguf_package, tiny_gemma, tmp_path, monkeypatch):
    cfg = write_config(tmp_path, f"{backbone.GGUF_PREFIX}{gguf_package.__name__}")
    corpus, target = write_corpus(tmp_path / "corpus", FIRST), backbone.gguf_cache_folder(gguf_package.__name__)
    with monkeypatch.context() as m:
        failed = fill_disk(m, pattern)
        if pattern == "model.safetensors":  # safetensors writes from Rust, and says so with its own error type
            from safetensors import SafetensorError

            def full(*args, **kwargs):
                failed.append(args[1])
                raise SafetensorError(f"Error while serializing: I/O error: {NO_SPACE} (os error 28)")

            m.setattr("transformers.modeling_utils.safe_save_file", full)
        r = CliRunner().invoke(app, ["index", str(corpus), "--index", str(tmp_path / "idx"), "--model", str(cfg)])
    assert failed, f"nothing matching {pattern} was written"
    assert r.exit_code == 2, r.output
    line = the_error(r.output)
    assert f"{target}: cannot de-quantize tiny.gguf into this cache" in line and NO_SPACE in line, line
    assert list(target.parent.iterdir()) == []  # no partial cache, no temp folder

    got = Embedder(str(cfg))  # space freed: converted again, from scratch
    assert gguf_package.calls == 2 and (target / "GEMMA_NOTICE.txt").is_file()
    (tmp_path / "plain").mkdir()
    want = Embedder(str(write_config(tmp_path / "plain", tiny_gemma)))  # the tiny model, not through a cache
    texts = list(FIRST.values())
    assert np.allclose(got.encode_documents(texts, progress=False).vectors,
                       want.encode_documents(texts, progress=False).vectors, atol=1e-5)


def test_a_killed_conversion_leaves_no_temp_folder_after_the_next_one(gguf_package, tmp_path):
    target = backbone.gguf_cache_folder(gguf_package.__name__)
    dead = target.parent / f".{target.name}.{2**22 + 1}.abcd"  # above Linux's largest pid: its process is gone
    live = target.parent / f".{target.name}.{os.getpid()}.efgh"  # a conversion still running beside this one
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "tiny.gguf").write_bytes(bytes(1000))
    Embedder(str(write_config(tmp_path, f"{backbone.GGUF_PREFIX}{gguf_package.__name__}")))
    assert gguf_package.calls == 1 and (target / "config.json").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([target.name, live.name])


def test_a_converted_model_reads_its_tokenizer_file_as_is(gguf_package, tmp_path, monkeypatch):
    """Only a folder longretr de-quantised has its tokenizer.json read as is (families.load_tokenizer)."""
    seen, real = [], backbone.load_tokenizer
    monkeypatch.setattr(backbone, "load_tokenizer", lambda *a, **k: seen.append(k) or real(*a, **k))
    Embedder(str(write_config(tmp_path, f"{backbone.GGUF_PREFIX}{gguf_package.__name__}")))
    (tmp_path / "plain").mkdir()
    Embedder(str(write_config(tmp_path / "plain", backbone.gguf_cache_folder(gguf_package.__name__))))
    assert seen == [{"converted": True}, {"converted": False}]


# -- commands' output files ----------------------------------------------------------------------------------------


def test_a_full_disk_while_writing_a_search_run_leaves_no_half_file(tmp_path, embedder, monkeypatch):
    folder, out = tmp_path / "idx", tmp_path / "out"
    index_corpus(write_corpus(tmp_path / "corpus", FIRST), folder, embedder, progress=False)
    out.mkdir()
    (queries := tmp_path / "q.tsv").write_text("q1\tfox archive\nq2\tjson\n")
    args = ["search", "--queries", str(queries), "--index", str(folder), "--mode", "lexical", "--output"]
    with monkeypatch.context() as m:
        failed = fill_disk(m, "*run.trec*")
        r = CliRunner().invoke(app, [*args, str(out / "run.trec")])
    assert failed and r.exit_code == 2, r.output
    assert the_error(r.output) == f"error: {out / 'run.trec'}: cannot write ({NO_SPACE})"
    assert list(out.iterdir()) == []  # no half run file that reads as a result, no temp file
    r = CliRunner().invoke(app, [*args, str(out / "run.trec")])
    assert r.exit_code == 0 and (out / "run.trec").read_text().startswith("q1 Q0 "), r.output


def test_a_full_disk_while_writing_eval_results_is_one_line(tmp_path, tiny_config, monkeypatch):
    from longretr.evaluate import runner

    def full(results, folder):
        raise OSError(errno.ENOSPC, NO_SPACE, str(folder / "results.json"))

    monkeypatch.setattr(runner, "write_outputs", full)
    monkeypatch.setenv("LONGRETR_HOME", str(tmp_path / "home"))
    data = Path(__file__).parent / "data" / "longembed"
    r = CliRunner().invoke(app, ["eval", "-m", str(tiny_config), "-b", "bm25", "--data", str(data), "--tasks", "qmsum",
                                 "--out", str(tmp_path / "out"), "--run", "r"])
    assert r.exit_code == 2, r.output
    line = the_error(r.output)
    assert line.startswith(f"error: {tmp_path / 'out'}") and f"results.json: cannot write ({NO_SPACE})" in line
    assert list((tmp_path / "out").iterdir()) == []  # the unfinished run is removed
