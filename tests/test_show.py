"""`longretr show ID [--chars START-END]`, store.document and GET /document: a document's indexed text, or a hit's
passage of it."""

import json
import pathlib
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from tiny_models import write_corpus
from typer.testing import CliRunner

from longretr import store
from longretr.cli import app
from longretr.indexer import index_corpus
from longretr.server import SearchService, create_app

PLAIN = " ".join(f"word{i:04d}" for i in range(300))  # 2,699 characters
TEXTS = {"plain.txt": PLAIN, "web/page.html": "<html><head><title>Page</title></head><body><p>a lazy dog</p></body>"}


@pytest.fixture(scope="module")
def folder(embedder, tmp_path_factory):
    base = tmp_path_factory.mktemp("show")
    index_corpus(write_corpus(base / "corpus", TEXTS), base / "idx", embedder, progress=False)
    return base / "idx"


def show(folder, *args: str):
    return CliRunner().invoke(app, ["show", *args, "--index", str(folder)])


def test_chars_takes_offsets_as_search_prints_them_and_refuses_anything_else_in_one_line(folder):
    r = show(folder, "plain.txt", "--chars", "1,000-1,017")
    assert r.exit_code == 0 and r.stdout == PLAIN[1000:1017] + "\n", r.output
    # a stray comma or underscore was a traceback (exit 1); "0-1,0" read as 0-10, "1,2,3" as 123
    for bad in (",-5", "_-5", "1,2,3-5", "0-1,0", "1_000-1_017", "5-"):
        r = show(folder, "plain.txt", "--chars", bad)
        assert r.exit_code == 2, (bad, r.output)
        assert r.output == f"error: --chars {bad!r}: expected START-END, e.g. 15544-16573 or 15,544-16,573\n"


def test_a_range_error_shows_the_bounds_used(folder):
    snap = store.load(folder, lexical=False, ann=False)
    with pytest.raises(ValueError, match=r"^characters -1-2,699: not a range inside 'plain.txt' \(2,699 characters\)$"):
        store.document(snap, "plain.txt", start=-1)  # was "characters -1-None"
    with pytest.raises(ValueError, match=r"^characters 0-0: not a range inside 'plain.txt'"):
        store.document(snap, "plain.txt", end=0)  # was "characters None-0"
    r = show(folder, "plain.txt", "--chars", "5,000-6,000")
    assert r.exit_code == 2 and "characters 5,000-6,000: not a range inside 'plain.txt'" in r.output, r.output


def test_an_id_with_undecodable_bytes_is_no_such_document(folder):
    r = show(folder, "plain.tx\udcff")  # what Python makes of a non-UTF-8 byte on the command line; was a traceback
    assert r.exit_code == 2, r.output
    assert r.output == f"error: {folder}: no document 'plain.tx\\udcff'; did you mean 'plain.txt'?\n"


def test_show_reads_the_docs_table_alone(folder, tmp_path):
    """The vectors (gigabytes for a large index) are not read to print a passage: show works without them."""
    copy = tmp_path / "idx"
    shutil.copytree(folder, copy)
    for vectors in copy.glob("vectors-*.faiss"):
        vectors.unlink()
    r = show(copy, "web/page.html", "--chars", "2-6")
    assert r.exit_code == 0 and r.stdout == "lazy\n", r.output


def test_document_endpoint_names_a_bad_parameter_in_words(folder, embedder):
    service = SearchService(folder, embedder, reload_interval=0)
    try:
        with TestClient(create_app(service)) as client:
            r = client.get("/document", params={"id": "plain.txt", "start": "1,000"})
            assert r.status_code == 422 and r.json()["error"] == (
                "'start' (query parameter): Input should be a valid integer, unable to parse string as an integer, "
                "got '1,000'")
            r = client.get("/document")
            assert r.status_code == 422 and r.json()["error"] == "'id' (query parameter): Field required"
            r = client.get("/document", params={"id": "plain.txt", "end": 0})
            assert r.status_code == 422 and r.json()["error"].startswith("characters 0-0: not a range inside")
    finally:
        service.close()


def test_ids_from_macos_file_names_match_what_is_typed(embedder, tmp_path):
    """A file copied from macOS has a decomposed name ("e" + U+0301) that looks like the "é" a keyboard types. show,
    search --id and --path-prefix, and rm find it either way; the stored id stays the file's own."""
    decomposed, typed = "re\u0301sume\u0301/cafe\u0301.txt", "résumé/café.txt"
    texts = {decomposed: "a cafe menu with coffee prices", "other.txt": "a lazy dog sleeps"}
    folder = tmp_path / "idx"
    index_corpus(write_corpus(tmp_path / "corpus", texts), folder, embedder, progress=False)
    assert set(store.load(folder).docs.column("id").to_pylist()) == {decomposed, "other.txt"}

    r = show(folder, typed)
    assert r.exit_code == 0 and r.stdout == texts[decomposed] + "\n", r.output
    for args in (["--id", typed], ["--path-prefix", "résumé/"]):
        r = CliRunner().invoke(app, ["search", "coffee", "--index", str(folder), "--json", *args])
        assert r.exit_code == 0, r.output
        assert [h["id"] for h in json.loads(r.stdout)] == [decomposed], (args, r.output)
        assert "has no document" not in r.output

    r = CliRunner().invoke(app, ["rm", typed, decomposed, "--index", str(folder)])  # one document, in both forms
    assert r.exit_code == 0 and r.output == f"{folder}: removed 1 document, 1 left (version 2)\n", r.output  # was 2
    assert store.load(folder).docs.column("id").to_pylist() == ["other.txt"]


def test_an_id_that_matches_several_unicode_forms_is_refused_not_guessed(embedder, tmp_path):
    """Two files whose names differ only in their Unicode form (possible on Linux), neither in NFC: each is found by
    its exact id; the NFC form they share finds both, so show and rm refuse it rather than pick one."""
    ring, angstrom, typed = "A\u030a.txt", "\u212b.txt", "\u00c5.txt"  # all three are "Å.txt"
    folder = tmp_path / "idx"
    index_corpus(write_corpus(tmp_path / "corpus", {ring: "one text", angstrom: "another text"}), folder, embedder,
                 progress=False)
    assert show(folder, ring).stdout == "one text\n" and show(folder, angstrom).stdout == "another text\n"
    r = show(folder, typed)
    assert r.exit_code == 2 and "matches 2 ids that differ only in their Unicode form" in r.output, r.output
    r = CliRunner().invoke(app, ["rm", typed, "--index", str(folder)])
    assert r.exit_code != 0 and "differ only in their Unicode form; nothing removed" in r.output, r.output
    assert store.load(folder).count == 2


def test_info_says_what_an_index_holds_without_reading_its_vectors(folder, tmp_path):
    copy = tmp_path / "idx"
    shutil.copytree(folder, copy)
    for vectors in copy.glob("vectors-*.faiss"):
        vectors.unlink()
    docs = store.load(folder).docs
    r = CliRunner().invoke(app, ["info", "--index", str(copy), "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    manifest = store.read_manifest(folder)
    assert (got["documents"], got["tokens"], got["truncated"], got["version"]) == \
        (2, sum(docs.column("n_tokens").to_pylist()), sum(docs.column("truncated").to_pylist()), manifest["version"])
    assert got["model_fingerprint"] == manifest["model_fingerprint"] and got["dim"] == manifest["dim"]
    assert got["other_vectors"] == store.load(folder).index.ntotal - 2 and got["pending_shards"] == 0
    assert got["bytes"] > 0

    (copy / "pending" / "abc").mkdir(parents=True)  # an interrupted run's shard
    (copy / "pending" / "abc" / "shard-1-ab.npz").write_bytes(b"x")
    r = CliRunner().invoke(app, ["info", "--index", str(copy)])
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"{copy}: 2 documents, {got['tokens']:,} tokens") and "pending: 1 shards" in r.stdout
    assert "interrupted or is still going" in r.stdout  # a writer may be encoding them now: "interrupted" misled
    assert "0.0 MiB" not in r.stdout and f"; {got['bytes'] / 1024:.1f} KiB\n" in r.stdout  # a small index in KiB

    r = CliRunner().invoke(app, ["info", "--index", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no index here" in r.output


def edited(folder, tmp_path, manifest=None, docs=None):
    """A copy of the index with its manifest changed by manifest(dict) and its docs table replaced by docs(table)."""
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    m = store.read_manifest(copy)
    if manifest:
        manifest(m)
        (copy / store.MANIFEST).write_text(json.dumps(m))
    if docs:
        path = copy / m["files"]["docs"]
        pq.write_table(docs(pq.read_table(path)), path)
    return copy


def set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


DAMAGE = {  # each was a traceback (exit 1), a multi-line error or a wrong sum ("123 tokens" from strings 1, 2)
    "model not a table": ({"manifest": lambda m: m.update(model="tiny")}, None),
    "a file name not a string": ({"manifest": lambda m: m["files"].update(lexical=5)}, "names a file by other than a"),
    "docs named ''": ({"manifest": lambda m: m["files"].update(docs="")}, "(docs: '')"),
    "ranking not a table": ({"manifest": lambda m: m.update(ranking="hybrid")}, "manifest.json: bad ranking settings"),
    "docs missing": ({"docs": lambda t: t}, "docs-000001.parquet: missing (named by manifest.json)"),
    "column missing": ({"docs": lambda t: t.drop(["n_tokens"])}, "missing columns ['n_tokens']"),
    "n_tokens strings": ({"docs": lambda t: set_column(t, "n_tokens", pa.array(["1", "2"]))}, "n_tokens is string"),
    "n_tokens null": ({"docs": lambda t: set_column(t, "n_tokens", pa.array([1, None]))}, "n_tokens has no value in 1"),
    "truncated strings": ({"docs": lambda t: set_column(t, "truncated", pa.array(["a", "b"]))}, "truncated is string"),
    "passages not lists": ({"docs": lambda t: set_column(t, "passages", pa.array([1, 2]))}, "passages is int64"),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_info_on_a_damaged_or_hand_edited_index(folder, tmp_path, case):
    edit, error = DAMAGE[case]
    copy = edited(folder, tmp_path, **edit)
    if case == "docs missing":
        next(copy.glob("docs-*.parquet")).unlink()
    r = CliRunner().invoke(app, ["info", "--index", str(copy)])
    if error is None:  # described all the same, the model as unknown
        assert r.exit_code == 0 and "\nmodel: ? (fingerprint " in r.stdout, r.output
        return
    assert r.exit_code == 2 and r.output.startswith(f"error: {copy}") and r.output.count("\n") == 1, r.output
    assert error in r.output, r.output


def test_info_shows_the_search_defaults_search_uses(folder, tmp_path):
    """A manifest without ranking settings, or with some, is searched with the defaults for the rest: info said
    "search: ? by default" and "dense weight None, k None"."""
    copy = edited(folder, tmp_path, manifest=lambda m: (m.pop("ranking"), m.pop("dim")))
    r = CliRunner().invoke(app, ["info", "--index", str(copy)])
    assert r.exit_code == 0 and "\nsearch: hybrid by default (convex fusion, dense weight 0.5); " in r.stdout, r.output
    assert ", ? dimensions\n" in r.stdout  # not "None dimensions"
    assert json.loads(CliRunner().invoke(app, ["info", "--index", str(copy), "--json"]).stdout)["ranking"] == \
        {"mode": "hybrid", "fusion": "convex", "weight": 0.5, "rrf_k": 60}
    shutil.rmtree(copy)
    copy = edited(folder, tmp_path, manifest=lambda m: m.update(ranking={"mode": "hybrid", "fusion": "rrf"}))
    r = CliRunner().invoke(app, ["info", "--index", str(copy)])
    assert "search: hybrid by default (rrf fusion, dense weight 0.5, k 60); " in r.stdout, r.output


def test_info_on_an_index_from_before_passages_says_its_vectors_are_not_recorded(folder, tmp_path):
    copy = edited(folder, tmp_path, docs=lambda t: t.drop(["passages"]))
    r = CliRunner().invoke(app, ["info", "--index", str(copy)])
    want = "longer than 64, in windows); vectors not recorded (an index from before passages)\n"
    assert r.exit_code == 0 and want in r.stdout, r.output


def test_info_on_a_file_says_so(folder):
    r = CliRunner().invoke(app, ["info", "--index", str(folder / store.MANIFEST)])  # was "no index here"
    assert r.exit_code == 2 and r.output == \
        f"error: {folder / store.MANIFEST}: a file, not an index folder; the index is the folder {folder}\n"


def test_info_while_a_commit_removes_the_pending_shards(folder, monkeypatch):
    """A writer's commit removes pending/ while info lists it: a FileNotFoundError traceback, now 0 shards."""
    glob = pathlib.Path.glob

    def racing(self, pattern):
        if pattern.startswith("pending/"):
            raise FileNotFoundError(2, "No such file or directory", str(self / "pending" / "abc"))
        return glob(self, pattern)

    monkeypatch.setattr(pathlib.Path, "glob", racing)
    r = CliRunner().invoke(app, ["info", "--index", str(folder), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["pending_shards"] == 0, r.output
