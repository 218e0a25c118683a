"""Index lifecycle: kill -9 and resume, concurrent readers, one writer, `rm`, index types, bad input."""

import codecs
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file, save_file
from tiny_models import WORDS, write_config, write_lora
from typer.testing import CliRunner

from longretr import index_types, store
from longretr.cli import app
from longretr.corpus import read_corpus
from longretr.embedder import Embedder
from longretr.indexer import LazyEmbedder, index_corpus, remove_documents
from longretr.search import Searcher

REPO = Path(__file__).resolve().parent.parent


def text(i: int, n: int = 12) -> str:
    """A distinct small document made of the tiny tokenizer's words."""
    rng = np.random.default_rng(i)
    return f"doc {i}: " + " ".join(rng.choice(WORDS, n))


def write_docs(root: Path, ids: range) -> None:
    root.mkdir(exist_ok=True)
    for i in ids:
        (root / f"d{i:04d}.txt").write_text(text(i))


@pytest.fixture(scope="module")
def cfg(tiny_gemma, tmp_path_factory) -> Path:
    return write_config(tmp_path_factory.mktemp("cfg"), tiny_gemma)


@pytest.fixture(scope="module")
def embedder(cfg):
    return Embedder(str(cfg))


def by_id(folder: Path) -> dict[str, np.ndarray]:
    snap = store.load(folder)
    return {r["id"]: snap.index.reconstruct(r["vid"]) for r in snap.docs.select(["id", "vid"]).to_pylist()}


# -- crash safety -------------------------------------------------------------------------------


def test_kill_9_mid_run_keeps_last_version_and_resume_equals_uninterrupted(tmp_path, cfg, embedder):
    corpus, folder, reference = tmp_path / "corpus", tmp_path / "idx", tmp_path / "ref"
    write_docs(corpus, range(20))
    index_corpus(corpus, folder, embedder, progress=False)
    index_corpus(corpus, reference, embedder, progress=False)
    write_docs(corpus, range(20, 400))
    pending = folder / "pending"
    child = subprocess.Popen(
        [sys.executable, "-m", "longretr.cli", "index", str(corpus), "--index", str(folder), "--model", str(cfg),
         "--shard-tokens", "1"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(pending.rglob("shard-*.npz")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL, f"the indexer ended before the kill: {err.decode()[-2000:]}"
    saved = len(list(pending.rglob("shard-*.npz")))
    assert 1 <= saved < 380  # killed mid-run

    # the last good version is untouched and searchable
    snap = store.load(folder)
    assert snap.manifest["version"] == 1 and snap.count == 20
    hits = Searcher(folder, embedder).search([text(3)], k=3, mode="hybrid")[0]
    assert hits[0].id == "d0003.txt"

    resumed = index_corpus(corpus, folder, embedder, progress=False)
    assert resumed.resumed >= saved and resumed.resumed + resumed.encoded == 380  # nothing saved is re-encoded
    assert not pending.exists()
    index_corpus(corpus, reference, embedder, progress=False)  # the same run, uninterrupted
    got, want = store.load(folder), store.load(reference)
    assert got.docs.drop(["mtime"]).equals(want.docs.drop(["mtime"]))  # same ids, vids, hashes, texts
    a, b = by_id(folder), by_id(reference)
    assert a.keys() == b.keys() and len(a) == 400
    assert all(np.allclose(a[i], b[i], atol=1e-5) for i in a)
    assert Searcher(folder, embedder).search(["fox archive"], 5) == Searcher(reference, embedder).search(
        ["fox archive"], 5)


def stop_at_manifest(monkeypatch) -> None:
    """A commit interrupted (KeyboardInterrupt) just before its manifest is written: its data files are."""
    real = store.atomic_write_bytes

    def stop(path, data):
        if path.name == store.MANIFEST:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(store, "atomic_write_bytes", stop)


def test_crash_between_data_files_and_manifest(tmp_path, embedder, monkeypatch):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(5))
    index_corpus(corpus, folder, embedder, progress=False)
    write_docs(corpus, range(5, 8))
    stop_at_manifest(monkeypatch)  # the process dies after writing version 2's data files
    monkeypatch.setattr(store, "_discard", lambda *paths: None)  # a killed process cleans nothing up
    with pytest.raises(KeyboardInterrupt):
        index_corpus(corpus, folder, embedder, progress=False)
    monkeypatch.undo()
    assert (folder / "vectors-000002.faiss").exists() and (folder / "lexical-000002").is_dir()
    assert store.load(folder).count == 5  # readers still get version 1
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert (s.encoded, s.resumed, s.documents) == (0, 3, 8)
    assert store.read_manifest(folder)["version"] == 3  # version 2's orphans are never named, only removed later


def test_an_interrupted_commit_removes_its_files_unless_its_manifest_names_them(tmp_path, embedder, monkeypatch):
    # Ctrl-C or SIGTERM during a commit left its temp and data files until the next commit; after the manifest is in
    # place, they are the index and stay
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(5))
    index_corpus(corpus, folder, embedder, progress=False)
    write_docs(corpus, range(5, 8))
    stop_at_manifest(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(corpus, folder, embedder, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir() if "000002" in p.name) == []
    assert store.load(folder).count == 5
    with pytest.raises(KeyboardInterrupt):  # interrupted after the manifest's rename: version 2 is whole
        with store.writing(folder, *(folder / name for name in store.read_manifest(folder)["files"].values()),
                           folder / "half-written"):
            (folder / "half-written").write_bytes(b"x")
            raise KeyboardInterrupt
    assert not (folder / "half-written").exists() and store.load(folder).count == 5

    def stop_in_fsync(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", stop_in_fsync)
    with pytest.raises(KeyboardInterrupt):
        store.atomic_write_bytes(folder / "out.txt", b"data")
    monkeypatch.undo()
    assert not list(folder.glob(".out.txt.*.tmp")) and not (folder / "out.txt").exists()


def test_a_kill_while_pending_is_deleted_leaves_no_shards_to_report(tmp_path, embedder, monkeypatch):
    # killed between the commit and the end of deleting pending/, `info` said its shards were not committed yet
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(6))
    real = shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        if Path(path).exists():
            raise KeyboardInterrupt
        real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        index_corpus(corpus, folder, embedder, progress=False, shard_tokens=1)
    monkeypatch.undo()
    assert store.load(folder).count == 6 and store.pending_shards(folder) == []
    write_docs(corpus, range(6, 7))
    assert index_corpus(corpus, folder, embedder, progress=False).encoded == 1
    assert not list(folder.glob(".pending.*"))  # the next commit sweeps the renamed folder


def test_sigterm_stops_a_run_like_ctrl_c(tmp_path, cfg, embedder):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(10))
    index_corpus(corpus, folder, embedder, progress=False)
    write_docs(corpus, range(10, 400))
    child = subprocess.Popen(
        [sys.executable, "-m", "longretr.cli", "index", str(corpus), "--index", str(folder), "--model", str(cfg),
         "--shard-tokens", "1"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not store.pending_shards(folder) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 143, err.decode()[-2000:]  # it died silently with -15
    assert "stopped by SIGTERM; the index keeps its last committed version" in err.decode()
    assert "Traceback" not in err.decode() and store.pending_shards(folder)
    assert store.load(folder).count == 10


def test_a_file_deleted_while_the_run_reads_is_removed_from_the_index(tmp_path, embedder, monkeypatch, capsys):
    # it was listed, then gone when read: kept as "unreadable now" until the next run
    import longretr.corpus as corpus_module

    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(5))
    index_corpus(corpus, folder, embedder, progress=False)
    listed = corpus_module.iter_files

    def list_then_delete(*args, **kwargs):
        files = list(listed(*args, **kwargs))
        (corpus / "d0002.txt").unlink()
        return iter(files)

    monkeypatch.setattr(corpus_module, "iter_files", list_then_delete)
    summary = index_corpus(corpus, folder, embedder, progress=False)
    assert summary.removed == 1 and summary.documents == 4
    assert "d0002.txt: deleted while the run was reading the folder" in capsys.readouterr().err


def test_a_refused_first_run_loads_no_model(tmp_path):
    # the model (here one that cannot load) was loaded before the corpus was read
    cfg = write_config(tmp_path, tmp_path / "no-such-model", name="ghost")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no documents to index"):
        index_corpus(tmp_path / "empty", tmp_path / "idx", LazyEmbedder(str(cfg)), progress=False)
    write_docs(tmp_path / "corpus", range(2))
    r = CliRunner().invoke(app, ["index", str(tmp_path / "corpus"), "--index", str(tmp_path / "idx"),
                                 "--model", str(cfg)])
    assert r.exit_code == 2 and f"{tmp_path / 'no-such-model'}: no such folder" in r.output, r.output


def test_every_rename_is_on_disk_before_the_next_write(tmp_path, embedder, monkeypatch):
    """Power loss, not a crash: a rename is only durable once its folder is synced. Each rename of an index run (a
    pending shard, a data file, the lexical folder, the manifest) is followed by an fsync of the folder it is in,
    before anything else is written or removed."""
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(5))
    events, real_replace, real_fsync, real_unlink = [], os.replace, os.fsync, os.unlink

    def replace(src, dst, **kw):
        real_replace(src, dst, **kw)
        events.append(("rename", str(Path(dst).parent)))

    def fsync(fd):
        real_fsync(fd)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        else:
            events.append(("write", None))

    def unlink(path, *a, **kw):
        events.append(("remove", None))
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    index_corpus(corpus, folder, embedder, progress=False)
    write_docs(corpus, range(5, 7))
    index_corpus(corpus, folder, embedder, progress=False)  # a second version: the first one's files are removed
    monkeypatch.undo()
    renames = [i for i, e in enumerate(events) if e[0] == "rename"]
    assert len(renames) >= 10 and events[-1][0] != "rename"
    for i in renames:
        assert events[i + 1] == ("sync", events[i][1]), events[i:i + 3]
    assert store.load(folder).count == 7


def test_reader_that_loses_the_race_reloads_the_newer_version(tmp_path, embedder, monkeypatch):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(3))
    index_corpus(corpus, folder, embedder, progress=False)
    stale = store.read_manifest(folder)
    for n in (3, 4):  # two commits: version 1's files are removed
        write_docs(corpus, range(n, n + 1))
        index_corpus(corpus, folder, embedder, progress=False)
    assert not (folder / stale["files"]["vectors"]).exists()
    real, calls = store.read_manifest, []

    def first_call_stale(f):
        calls.append(f)
        return stale if len(calls) == 1 else real(f)

    monkeypatch.setattr(store, "read_manifest", first_call_stale)
    snap = store.load(folder)
    assert snap.manifest["version"] == 3 and snap.count == 5 and len(calls) >= 3


def test_concurrent_readers_always_see_a_consistent_version(tmp_path, embedder):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(10))
    index_corpus(corpus, folder, embedder, progress=False)
    expected = {1: {f"d{i:04d}.txt" for i in range(10)}}
    seen, errors, stop = [], [], threading.Event()
    query = np.ones((1, embedder.dim), dtype="float32") / np.sqrt(embedder.dim)

    def reader():
        while not stop.is_set():
            try:
                snap = store.load(folder)
                ids = set(snap.docs.column("id").to_pylist())
                assert snap.count == snap.index.ntotal == snap.lexical.count == snap.manifest["count"]
                _, vids = snap.index.search(query, snap.count)
                assert set(vids[0]) == set(snap.docs.column("vid").to_pylist())
                assert {v for v, _ in snap.lexical.search(["doc"], snap.count)[0]} == set(vids[0])
                seen.append((snap.manifest["version"], ids))
            except Exception as e:  # noqa: BLE001 - every failure is reported below
                errors.append(repr(e))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for step in range(8):
        if step % 3 == 2:
            victim = sorted(expected[max(expected)])[0]
            manifest = remove_documents(folder, [victim])
        else:
            write_docs(corpus, range(10 + 4 * step, 14 + 4 * step))
            index_corpus(corpus, folder, embedder, progress=False)
            manifest = store.read_manifest(folder)
        expected[manifest["version"]] = {r["id"] for r in store.load(folder).docs.select(["id"]).to_pylist()}
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len({v for v, _ in seen}) >= 3, "the readers should have seen several versions"
    assert all(ids == expected[v] for v, ids in seen)


def test_second_writer_gets_a_clear_error(tmp_path, cfg, embedder):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(3))
    index_corpus(corpus, folder, embedder, progress=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from longretr.store import writer_lock\n"
         "with writer_lock(Path(sys.argv[1])):\n    print('locked', flush=True); time.sleep(60)", str(folder)],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(store.IndexFolderError, match=f"another `longretr` process \\(pid {holder.pid}\\) is "
                                                          "writing this index"):
            index_corpus(corpus, folder, embedder, progress=False)
        r = CliRunner().invoke(app, ["rm", "d0000.txt", "--index", str(folder)])
        assert r.exit_code == 2 and "another `longretr` process" in r.output
        assert len(Searcher(folder, embedder).search(["fox"], 3, mode="dense")[0]) == 3  # readers are not blocked
    finally:
        holder.kill()
        holder.wait()
    assert index_corpus(corpus, folder, embedder, progress=False).documents == 3  # a dead writer's lock is gone


# -- rm -------------------------------------------------------------------------------------------


def test_rm_removes_documents_and_refuses_unknown_ids(tmp_path, cfg, embedder):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(6))
    index_corpus(corpus, folder, embedder, progress=False)
    runner = CliRunner()
    r = runner.invoke(app, ["rm", "d0001.txt", "d0004.txt", "--index", str(folder)])
    assert r.exit_code == 0 and "removed 2 documents, 4 left" in r.output, r.output
    searcher = Searcher(folder, embedder)
    assert searcher.count == 4 and store.load(folder).index.ntotal == 4
    hits = searcher.search([text(1)], k=10, mode="hybrid")[0]
    assert "d0001.txt" not in {h.id for h in hits} and len(hits) == 4
    r = runner.invoke(app, ["rm", "d0002.txt", "nope.txt", "--index", str(folder)])
    assert r.exit_code == 2 and "no document with id 'nope.txt'; nothing removed" in r.output
    assert store.load(folder).count == 4
    r = runner.invoke(app, ["rm", "d0002.md", "--index", str(folder)])  # a typo: the ids like it are named
    assert r.exit_code == 2 and "nothing removed; did you mean 'd0002.txt'" in " ".join(r.output.split()), r.output
    r = runner.invoke(app, ["rm", "x", "--index", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no index here" in r.output
    s = index_corpus(corpus, folder, embedder, progress=False)  # files still on disk come back
    assert (s.encoded, s.documents) == (2, 6)


# -- index types ------------------------------------------------------------------------------------


def test_plans_are_sized_from_the_corpus():
    assert index_types.plan("flat", 640, 10**6).factory is None
    p = index_types.plan("ivf", 640, 1_000_000)
    assert p.factory == "IVF4000,Flat" and p.params == {"nprobe": 250}
    assert index_types.plan("IVFPQ", 640, 100_000).factory == "IVF1265,PQ64np"
    assert index_types.plan("ivfpq", 32, 100_000).factory == "IVF1265,PQ4np"
    assert index_types.plan("hnsw", 640, 10).factory == "HNSW32"  # needs no training: any size
    small = index_types.plan("ivf", 640, 300)
    assert small.factory is None and "at least 4096 vectors; 300 in the index" in small.note
    assert index_types.plan("IDMap2,IVF64,SQ8", 32, 10_000).factory == "IVF64,SQ8"
    with pytest.raises(ValueError, match="--index-type 'IVF64,Bogus': not one of flat, ivf, hnsw, ivfpq"):
        index_types.plan("IVF64,Bogus", 32, 10_000)
    with pytest.raises(ValueError, match="empty"):
        index_types.check(" ", 32)


@pytest.mark.parametrize("spec", ["ivf", "hnsw", "ivfpq", "IVF32,SQ8"])
def test_approximate_types_find_what_flat_finds(spec):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4500, 32)).astype("float32")
    faiss.normalize_L2(x)
    flat = store.empty_index(32)
    ids = np.arange(4500, dtype="int64") * 7 + 3  # sparse ids, as after deletes
    flat.add_with_ids(x, ids)
    plan = index_types.plan(spec, 32, len(x))
    ann = index_types.build(plan, flat)
    assert isinstance(ann, faiss.IndexIDMap2) and ann.ntotal == 4500
    q = x[:200] + 0.05 * rng.standard_normal((200, 32)).astype("float32")
    _, want = flat.search(q, 1)
    _, got = ann.search(q, 10)
    recall = np.mean([w in g for w, g in zip(want[:, 0], got)])
    assert set(np.unique(got)) <= set(ids)  # the docs table's ids, not storage positions
    assert recall >= (0.6 if "PQ" in plan.factory else 0.9), (spec, recall)


def test_index_type_end_to_end(tmp_path, cfg, embedder, monkeypatch, capsys):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(60))
    s = index_corpus(corpus, folder, embedder, progress=False, index_type="ivf")
    assert s.index_type == "IDMap2,Flat" and "uses exact (flat) search" in s.note
    assert "needs training on at least 4096 vectors" in capsys.readouterr().err
    assert "ann" not in store.read_manifest(folder)["files"]

    monkeypatch.setattr(index_types, "MIN_TRAIN_VECTORS", 50)
    s = index_corpus(corpus, folder, embedder, progress=False)  # the requested type is remembered
    manifest = store.read_manifest(folder)
    assert s.index_type == manifest["index_type"] == "IDMap2,IVF1,Flat" and manifest["files"]["ann"]
    s = index_corpus(corpus, folder, embedder, progress=False, index_type="hnsw")
    snap = store.load(folder)
    assert s.index_type == "IDMap2,HNSW32" and snap.ann is not None and snap.manifest["search_params"]["efSearch"]
    flat_hits = [h.id for h in Searcher(folder, embedder).search([text(7)], 5, mode="dense")[0]]
    _, vids = snap.index.search(embedder.encode_queries([text(7)]), 5)
    ids = dict(zip(snap.docs.column("vid").to_pylist(), snap.docs.column("id").to_pylist()))
    assert flat_hits == [ids[v] for v in vids[0]]  # HNSW on 60 vectors is exact
    remove_documents(folder, ["d0007.txt"])  # HNSW has no remove_ids: rebuilt from the flat vectors
    snap = store.load(folder)
    assert snap.ann.ntotal == snap.index.ntotal == 59
    r = CliRunner().invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg),
                                 "--index-type", "IVF8,Nonsense"])
    assert r.exit_code == 2 and "--index-type 'IVF8,Nonsense'" in r.output
    assert store.read_manifest(folder)["index_type"] == "IDMap2,HNSW32"  # refused before any change
    ann = folder / store.read_manifest(folder)["files"]["ann"]
    ann.write_bytes(ann.read_bytes()[:100])
    exact = Searcher(folder, embedder)  # without its ann file: exact over the flat vectors, with a warning
    assert re.search(f"{ann.name}: truncated or not a FAISS index.*dense search reads every vector",
                     exact.warnings()[0])
    _, vids = store.load(folder).index.search(embedder.encode_queries([text(8)]), 5)
    assert [h.id for h in exact.search([text(8)], 5, mode="dense")[0]] == [ids[v] for v in vids[0]]
    assert index_corpus(corpus, folder, embedder, progress=False, index_type="flat").encoded == 1  # repaired


def test_searcher_moves_the_index_to_gpus_when_faiss_has_them(tmp_path, embedder, monkeypatch):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(4))
    index_corpus(corpus, folder, embedder, progress=False)
    moved = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda ix: moved.append(ix) or ix, raising=False)
    searcher = Searcher(folder, embedder)
    assert searcher.index_device == "1 gpu" and moved == [searcher.snapshot.index]

    def no_gpu_version(ix):
        raise RuntimeError("not implemented for this index type")

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", no_gpu_version)
    searcher = Searcher(folder, embedder)
    assert searcher.index_device == "cpu" and len(searcher.search(["fox"], 2, mode="dense")[0]) == 2


# -- bad input --------------------------------------------------------------------------------------


def test_an_index_whose_adapter_is_gone_still_answers_lexical_and_names_the_way_out(tmp_path, tiny_gemma):
    # the model's fingerprint was checked when a Searcher was made, so a lost adapter refused even lexical search
    adapter = tmp_path / "adapter"
    write_lora(adapter, {f"layers.{i}.self_attn.q_proj": (32, 32) for i in range(4)}, prefix="")
    cfg = write_config(tmp_path, tiny_gemma, name="adapted", adapter=str(adapter))
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(6))
    index_corpus(corpus, folder, Embedder(str(cfg)), progress=False)
    runner = CliRunner()
    shutil.move(adapter, tmp_path / "elsewhere")
    found = runner.invoke(app, ["search", "doc", "--index", str(folder), "--mode", "lexical", "-k", "2"])
    assert found.exit_code == 0 and found.output.count(".txt") == 2, found.output
    dense = runner.invoke(app, ["search", "doc", "--index", str(folder), "--mode", "dense"])
    assert dense.exit_code == 2 and f"adapter folder {adapter} not found" in dense.output
    assert "--mode lexical" in dense.output
    (corpus / "new.txt").write_text(text(99))
    update = runner.invoke(app, ["index", str(corpus), "--index", str(folder)])
    assert update.exit_code == 2 and f"adapter folder {adapter} is not here" in update.output
    assert "--model NAME --rebuild" in update.output
    shutil.move(tmp_path / "elsewhere", adapter)
    weights = adapter / "adapter_model.safetensors"
    changed = {k: 2 * v for k, v in load_file(weights).items()}
    save_file(changed, weights)
    dense = runner.invoke(app, ["search", "doc", "--index", str(folder), "--mode", "dense"])
    assert dense.exit_code == 2 and "whose adapter files have changed since" in dense.output, dense.output


def test_bad_files_are_named_skipped_and_nothing_is_lost(tmp_path, embedder, capsys):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(4))
    index_corpus(corpus, folder, embedder, progress=False)
    (corpus / "binary.txt").write_bytes(b"abc\x00def")
    (corpus / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    (corpus / "empty.rst").write_text("")
    with open(corpus / "huge.txt", "wb") as f:  # 100 MB, sparse: costs no disk
        f.truncate(100 * 10**6)
    (corpus / "sub").mkdir()
    os.symlink(corpus, corpus / "sub" / "loop")
    (corpus / "d0002.txt").write_bytes(b"\x00 damaged since the last run")  # indexed before, unreadable now
    capsys.readouterr()
    s = index_corpus(corpus, folder, embedder, progress=False)
    err = capsys.readouterr().err
    for name, reason in [("binary.txt", "binary file"), ("latin1.md", "invalid UTF-8 at byte 3"),
                         ("empty.rst", "empty file"), ("huge.txt", "file is 95 MiB, over the 64 MiB limit"),
                         ("loop", "folder already read (a symlink to it, or a loop)"),
                         ("d0002.txt", "keeping the indexed version of 'd0002.txt'")]:
        assert any(name in line and reason in line for line in err.splitlines()), (name, err)
    assert (s.skipped_files, s.encoded, s.removed, s.documents) == (5, 0, 0, 4)
    assert Searcher(folder, embedder).search([text(2)], 1, mode="lexical")[0][0].id == "d0002.txt"


def test_unreadable_file_permission_denied(tmp_path, capsys):
    """chmod 000 only stops a reader that is not root: as root, read as `nobody` for the moment."""
    root = Path(tempfile.mkdtemp(prefix="longretr-eacces-"))  # outside pytest's 0700 folders
    try:
        root.chmod(0o755)
        (root / "ok.txt").write_text("readable")
        (root / "secret.txt").write_text("not for you")
        (root / "secret.txt").chmod(0)
        skipped: list[str] = []
        if os.geteuid() == 0:
            # the codec module is imported on first use, which `nobody` cannot do where Python lives under /root:
            # run alone, this test failed with "unknown encoding: utf-8-sig" instead of reaching the file
            codecs.lookup("utf-8-sig")
            try:
                os.seteuid(65534)
            except PermissionError:
                pytest.skip("running as root without the right to drop privileges, so chmod 000 cannot bite")
            try:
                docs = [d.id for d in read_corpus(root, skipped=skipped)]
            finally:
                os.seteuid(0)
        else:
            docs = [d.id for d in read_corpus(root, skipped=skipped)]
        assert docs == ["ok.txt"] and skipped == [str(root / "secret.txt")]
        assert "skipping " + str(root / "secret.txt") + ": cannot read (Permission denied)" in capsys.readouterr().err
    finally:
        (root / "secret.txt").chmod(0o600)
        for p in root.iterdir():
            p.unlink()
        root.rmdir()


def test_an_unreadable_folder_is_not_a_deletion(tmp_path, embedder, monkeypatch, capsys):
    """os.walk drops a folder it cannot list without a word: its documents were removed from the index as gone."""
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(2))
    write_docs(corpus / "sub", range(2, 4))
    (corpus / "sub" / "rows.jsonl").write_text(json.dumps({"id": "r1", "text": text(9)}) + "\n")
    index_corpus(corpus, folder, embedder, progress=False)
    scandir = os.scandir

    def denied(path="."):  # as a chmod 000 folder answers a reader that is not root
        if Path(path) == corpus / "sub":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    capsys.readouterr()
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert (s.removed, s.documents, s.skipped_files) == (0, 5, 1)
    assert not s.committed and store.load(folder).count == 5
    err = capsys.readouterr().err
    assert f"skipping {corpus / 'sub'}: cannot read folder (Permission denied)" in err
    assert "keeping the indexed version of 'r1'" in err and "keeping the indexed version of 'sub/d0003.txt'" in err
    monkeypatch.setattr(os, "scandir", scandir)
    shutil.rmtree(corpus / "sub")  # gone for real: removed
    assert index_corpus(corpus, folder, embedder, progress=False).removed == 3


def test_an_index_inside_its_corpus_is_not_read_as_documents(tmp_path, embedder, capsys):
    """Its docs table has id and text columns: it was read back as documents on every run after the first, and a
    deleted source file stayed in the index as a duplicate row of that table."""
    corpus = tmp_path / "corpus"
    write_docs(corpus, range(3))
    folder = corpus / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    (folder / "GEMMA_NOTICE.txt").write_text("a notice beside the index")  # as a licensed backbone's index has
    capsys.readouterr()
    assert not index_corpus(corpus, folder, embedder, progress=False).committed
    assert f"skipping {folder}: a longretr index folder" in capsys.readouterr().err
    (corpus / "d0001.txt").unlink()
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert (s.removed, s.documents) == (1, 2)
    assert sorted(store.load(folder).docs.column("id").to_pylist()) == ["d0000.txt", "d0002.txt"]
    with pytest.raises(ValueError, match="a longretr index folder, not a corpus"):  # the arguments swapped
        index_corpus(folder, tmp_path / "other", embedder, progress=False)


def test_an_empty_corpus_does_not_wipe_its_index(tmp_path, embedder):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(2))
    index_corpus(corpus, folder, embedder, progress=False)
    for path in corpus.iterdir():
        path.unlink()
    with pytest.raises(ValueError, match="no documents found: the folder holds no files; this run would remove all 2"):
        index_corpus(corpus, folder, embedder, progress=False)
    assert store.load(folder).count == 2
    (corpus / "junk.txt").write_bytes(b"\xff\xfe\x00junk")  # files of a readable type, none readable
    with pytest.raises(ValueError, match="no documents found: 1 file could not be read .*remove all 2"):
        index_corpus(corpus, folder, embedder, progress=False)
    assert store.load(folder).count == 2


def test_an_emptied_file_is_removed_like_a_deleted_one(tmp_path, embedder, capsys):
    """An emptied file was "unreadable now", so its old text stayed searchable at every run after."""
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(3))
    (corpus / "page.html").write_text("<html><body><p>confidential salary numbers</p></body></html>")
    (corpus / "rows.jsonl").write_text('{"id": "r1", "text": "salary table"}\n')
    index_corpus(corpus, folder, embedder, progress=False)
    (corpus / "d0001.txt").write_text("  \n")
    (corpus / "page.html").write_text("<html><body><script>x()</script></body></html>")
    (corpus / "rows.jsonl").write_text('{"id": "r1", "text": ""}\n')
    (corpus / "d0002.txt").write_bytes(b"\x00 damaged")  # unreadable: kept
    capsys.readouterr()
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert (s.removed, s.skipped_files, s.documents) == (3, 4, 2)
    assert sorted(store.load(folder).docs.column("id").to_pylist()) == ["d0000.txt", "d0002.txt"]
    assert Searcher(folder, embedder).search(["salary"], 5, mode="lexical") == [[]]
    for path in corpus.iterdir():
        path.write_text("")
    (corpus / "new.txt").write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"no documents found: 1 file could not be read and 5 files held no text "
                                         r"\(warnings above\); this run would remove all 2"):
        index_corpus(corpus, folder, embedder, progress=False)


def test_another_folder_does_not_replace_the_index(tmp_path, embedder):
    corpus, other, folder = tmp_path / "corpus", tmp_path / "other", tmp_path / "idx"
    write_docs(corpus, range(2))
    index_corpus(corpus, folder, embedder, progress=False)
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "x.txt").write_text("a document of another corpus")
    with pytest.raises(ValueError, match="holds 1 other document, none of the index's; .*remove all 2 .*--rebuild"):
        index_corpus(other, folder, embedder, progress=False)
    assert store.load(folder).count == 2
    assert index_corpus(other, folder, embedder, progress=False, rebuild=True).documents == 1
    write_docs(other, range(1))  # one document more: an ordinary update
    s = index_corpus(other, folder, embedder, progress=False)
    assert (s.documents, s.removed) == (2, 0)


def test_a_corpus_without_documents_makes_no_index_and_says_why(tmp_path, embedder, capsys):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    corpus.mkdir()
    with pytest.raises(ValueError, match="corpus: no documents to index: the folder holds no files"):
        index_corpus(corpus, folder, embedder, progress=False)
    (corpus / "a.xml").write_text("<a>x</a>")
    (corpus / "b.xml").write_text("<a>y</a>")
    with pytest.raises(ValueError, match=r"no documents to index: 2 files of other types not read \(\.xml 2\)"):
        index_corpus(corpus, folder, embedder, progress=False)
    (corpus / "c.txt").write_bytes(b"\xff bad")
    with pytest.raises(ValueError, match=r"no documents to index: 1 file could not be read \(warnings above\)"):
        index_corpus(corpus, folder, embedder, progress=False)
    assert not folder.exists()  # no folder holding only a lock file
    (corpus / "c.txt").write_text("now a document")
    capsys.readouterr()
    s = index_corpus(corpus, folder, embedder, progress=False)
    assert s.documents == 1
    assert "note: 2 files of other types not read (.xml 2)" in capsys.readouterr().err


def test_a_missing_corpus_creates_no_index_folder(tmp_path, embedder):
    with pytest.raises(FileNotFoundError, match="nowhere: no such file or folder"):
        index_corpus(tmp_path / "nowhere", tmp_path / "idx", embedder, progress=False)
    assert not (tmp_path / "idx").exists()


@pytest.fixture()
def small(tmp_path, embedder) -> tuple[Path, Path]:
    """A corpus of three documents and its index."""
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(3))
    index_corpus(corpus, folder, embedder, progress=False)
    return corpus, folder


def test_a_missing_index_names_the_indexes_beside_it(small, tmp_path):
    _, folder = small  # tmp_path/idx
    out = CliRunner().invoke(app, ["search", "fox", "--mode", "lexical", "--index", str(tmp_path / "default")])
    assert out.exit_code == 2
    assert f"default: no index here (manifest.json missing); build one with `longretr index`; beside it: {folder} " \
           "(choose with --index)" in " ".join(out.output.split())
    with pytest.raises(store.IndexFolderError, match=r"no index here \(manifest.json missing\); build one with "
                                                      r"`longretr index`$"):
        store.load(tmp_path / "nowhere" / "idx")


def test_an_index_path_that_is_a_file_is_a_clear_error(small, tmp_path, cfg):
    corpus, runner = small[0], CliRunner()
    a_file = corpus / "d0000.txt"
    for args in (["index", str(corpus), "--model", str(cfg)], ["rm", "d0000.txt"]):  # was a FileExistsError traceback
        for where in (a_file, a_file / "sub"):
            r = runner.invoke(app, [*args, "--index", str(where)])
            assert r.exit_code == 2 and str(where) in r.output and "Traceback" not in r.output, r.output
    r = runner.invoke(app, ["rm", "x", "--index", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no index here" in r.output
    assert not (tmp_path / "none").exists()  # the failed rm left an empty folder with a lock file


def test_an_infinite_rrf_k_is_refused_and_a_manifest_holding_one_is_named(small, cfg):
    corpus, folder = small
    runner = CliRunner()
    r = runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg), "--rrf-k", "inf"])
    assert r.exit_code == 2 and "rrf_k must be > 0 and finite" in r.output  # was stored as "Infinity" (not JSON)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "ranking": {**manifest["ranking"], "rrf_k": 1e999}}))
    r = runner.invoke(app, ["search", "lazy dog", "--index", str(folder)])  # what an older longretr wrote
    assert r.exit_code == 2 and f"{folder / 'manifest.json'}: bad ranking settings" in r.output
    r = runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg), "--rrf-k", "60"])
    assert r.exit_code == 0 and store.read_manifest(folder)["ranking"]["rrf_k"] == 60  # the way out


def test_search_output_problems_fail_before_searching(small, tmp_path):
    folder, runner = small[1], CliRunner()
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tlazy dog\n")
    for output, error in [(tmp_path / "no" / "run.trec", "no such folder"), (small[0], "a folder")]:
        r = runner.invoke(app, ["search", "--queries", str(queries), "--index", str(folder), "--output", str(output)])
        assert r.exit_code == 2 and f"{output}: cannot write there ({error})" in r.output, r.output  # was a traceback
    r = runner.invoke(app, ["search", "lazy dog", "--index", str(folder), "--output", str(tmp_path / "run.trec")])
    assert r.exit_code == 2 and "--output is for batch mode" in r.output  # was ignored: nothing written, exit 0


def test_bad_query_files_are_named(small, tmp_path):
    folder, runner = small[1], CliRunner()
    queries = tmp_path / "q.jsonl"
    for row in ('{"id": "q1", "text": null}', '{"id": "q1", "text": ["lazy"]}', '{"id": null, "text": "lazy"}'):
        queries.write_text(row + "\n")  # were searched as the texts "None" and "['lazy']", or the id "None"
        r = runner.invoke(app, ["search", "--queries", str(queries), "--index", str(folder)])
        assert r.exit_code == 2 and f"{queries}:1: expected a string text" in r.output, r.output
    queries = tmp_path / "q.tsv"
    queries.write_bytes(b"q1\tcaf\xe9\n")
    r = runner.invoke(app, ["search", "--queries", str(queries), "--index", str(folder)])
    assert r.exit_code == 2 and f"{queries}: not UTF-8 text" in r.output  # named no file


def test_a_manifest_without_model_fingerprint_is_named(small, cfg):
    corpus, folder = small
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["model_fingerprint"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for args in (["search", "lazy dog"], ["index", str(corpus), "--model", str(cfg)]):  # were KeyError tracebacks
        r = CliRunner().invoke(app, [*args, "--index", str(folder)])
        assert r.exit_code == 2 and "no model fingerprint" in r.output, r.output


def test_foreign_and_damaged_index_files_are_named(tmp_path, embedder):
    corpus, folder = tmp_path / "corpus", tmp_path / "idx"
    write_docs(corpus, range(4))
    index_corpus(corpus, folder, embedder, progress=False)
    manifest = store.read_manifest(folder)
    vec = folder / manifest["files"]["vectors"]
    good = vec.read_bytes()
    faiss.write_index(faiss.IndexFlatL2(32), str(vec))  # a real FAISS file, but not one longretr wrote
    with pytest.raises(store.IndexFolderError, match=f"{vec.name}: a FAISS IndexFlatL2, not the IndexIDMap2"):
        store.load(folder)
    vec.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(store.IndexFolderError, match=f"{vec.name}: truncated or not a FAISS index"):
        store.load(folder)
    vec.write_bytes(good)
    docs = folder / manifest["files"]["docs"]
    other = store.load(folder).docs
    pq.write_table(other.set_column(0, "vid", pa.array(other.column("vid").to_numpy() + 100)), docs)
    with pytest.raises(store.IndexFolderError, match="vector ids differ from the vid column"):
        store.load(folder)
    pq.write_table(other.drop(["sha256"]), docs)
    with pytest.raises(store.IndexFolderError, match=r"missing columns \['sha256'\]"):
        store.load(folder)
    # passages that are not pairs of offsets (a hand-edited table): searchable, with no passages shown
    pq.write_table(other.set_column(other.schema.get_field_index("passages"), "passages",
                                    pa.array(["x"] * other.num_rows)), docs)
    hits = Searcher(folder, embedder).search([text(1)], k=2)[0]
    assert len(hits) == 2 and all(h.passage is None for h in hits)
    docs.write_bytes(b"not parquet")
    with pytest.raises(store.IndexFolderError, match=f"{docs.name}: corrupt or unreadable docs table"):
        store.load(folder)
    docs.unlink()
    with pytest.raises(store.IndexFolderError, match=f"{docs.name}: missing \\(named by manifest.json\\)"):
        store.load(folder)
    (folder / "manifest.json").write_text(json.dumps({"format_version": 1, "name": "someone else's"}))
    with pytest.raises(store.IndexFolderError, match="names no vectors/docs files"):
        store.load(folder)
    (folder / "manifest.json").write_text(json.dumps({"format_version": 7}))
    with pytest.raises(store.IndexFolderError, match="not a longretr index manifest of format 1"):
        store.load(folder)
    s = index_corpus(corpus, folder, embedder, progress=False, rebuild=True)  # --rebuild recovers
    assert s.documents == 4 and store.read_manifest(folder)["version"] == 2


def test_index_and_search_name_a_model_whose_weights_are_missing_or_damaged(tiny_gemma, tmp_path):
    backbone = shutil.copytree(tiny_gemma, tmp_path / "model")
    config = write_config(tmp_path, backbone)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the quick brown fox")
    runner = CliRunner()
    assert runner.invoke(app, ["index", str(corpus), "--index", str(tmp_path / "idx"), "--model", str(config),
                               "--mode", "dense"]).exit_code == 0
    weights = backbone / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated: safetensors' own error type
    for args in (["index", str(corpus), "--index", str(tmp_path / "idx2"), "--model", str(config)],
                 ["search", "fox", "--index", str(tmp_path / "idx")]):
        out = runner.invoke(app, args)
        assert out.exit_code == 2 and f"cannot load its weights or tokenizer from {backbone}" in out.output, \
            (args, out.output, out.exception)
    weights.unlink()  # missing: transformers' OSError
    out = runner.invoke(app, ["search", "fox", "--index", str(tmp_path / "idx")])
    assert out.exit_code == 2 and "cannot load its weights" in out.output, (out.output, out.exception)


def test_a_run_tokenizes_a_few_texts_at_a_time_for_counts_and_passages(tmp_path, embedder, monkeypatch):
    # the whole corpus's token lists and offsets were held at once (~245 bytes a token: 5 GB at 19M tokens)
    import longretr.indexer as indexer_module

    corpus, folder, reference = tmp_path / "corpus", tmp_path / "idx", tmp_path / "ref"
    write_docs(corpus, range(7))
    index_corpus(corpus, reference, embedder, progress=False)
    sizes = []
    for name in ("document_tokens", "passages"):
        real = getattr(type(embedder), name)
        monkeypatch.setattr(type(embedder), name,
                            lambda self, texts, real=real: sizes.append(len(texts)) or real(self, texts))
    monkeypatch.setattr(indexer_module, "TOKENIZE_BATCH", 3)
    index_corpus(corpus, folder, embedder, progress=False)
    assert sizes and max(sizes) <= 3 and sum(sizes) == 14  # each text counted once and given passages once
    got, want = store.load(folder), store.load(reference)
    assert got.docs.drop(["mtime"]).equals(want.docs.drop(["mtime"]))


def test_tokenize_batches_hold_a_few_texts_or_characters_at_a_time(monkeypatch):
    # 64 texts of up to a million characters each made one call of 64M characters
    import longretr.indexer as indexer_module

    monkeypatch.setattr(indexer_module, "TOKENIZE_CHARS", 100)
    batches = indexer_module._tokenize_batches([60, 60, 10, 500, 5, 5])
    assert batches == [range(0, 1), range(1, 3), range(3, 4), range(4, 6)]  # a longer text goes alone
    monkeypatch.setattr(indexer_module, "TOKENIZE_BATCH", 2)
    assert indexer_module._tokenize_batches([1] * 5) == [range(0, 2), range(2, 4), range(4, 5)]
    assert indexer_module._tokenize_batches([]) == []


def test_a_symlink_whose_target_is_missing_keeps_its_documents(tmp_path, embedder, capsys):
    # a link into an unmounted drive is unreadable now, not deleted (a review found it removed as "deleted")
    corpus, folder, outside = tmp_path / "corpus", tmp_path / "idx", tmp_path / "drive"
    write_docs(corpus, range(3))
    outside.mkdir()
    (outside / "notes.txt").write_text(text(7))
    (corpus / "notes.txt").symlink_to(outside / "notes.txt")
    index_corpus(corpus, folder, embedder, progress=False)
    (outside / "notes.txt").rename(outside / "elsewhere.txt")
    write_docs(corpus, range(3, 4))
    summary = index_corpus(corpus, folder, embedder, progress=False)
    assert summary.documents == 5 and summary.removed == 0
    assert "notes.txt: cannot read (a symlink whose target is missing)" in capsys.readouterr().err


def test_an_interrupted_lexical_save_leaves_no_temp_folder(tmp_path, monkeypatch):
    from longretr import lexical

    index = lexical.LexicalIndex.build(["alpha beta", "gamma delta"], [0, 1])

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(lexical.np, "save", stopped)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "lexical-000001")
    assert list(tmp_path.iterdir()) == []
