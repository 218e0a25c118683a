"""Filtered search (`Searcher.search(where=Filter(...))`, `longretr search --path-prefix/--id`): the best k of the
documents the filter keeps, exactly, in every mode and index type."""

import json
import random
import sys
import threading
from dataclasses import replace

import httpx
import pytest
from fastapi.testclient import TestClient
from tiny_models import write_config, write_corpus
from typer.testing import CliRunner

from longretr.cli import app
from longretr.indexer import index_corpus
from longretr.queries import Filter
from longretr.search import Searcher
from longretr.server import SearchService, create_app

WORDS = ("archive digest json parser thread socket fox dog lazy quick brown command line argument time zone "
         "calendar queue heap sort random seed shell path glob").split()


def texts(n: int = 24) -> dict[str, str]:
    rng = random.Random(0)
    return {f"{'abc'[i % 3]}/doc{i:02d}.txt": " ".join(rng.choices(WORDS, k=rng.randint(6, 40))) for i in range(n)}


QUERIES = ["lazy dog", "json parser thread", "random seed shell glob"]
FILTERS = [Filter("b/"), Filter(ids=frozenset({"a/doc00.txt", "c/doc05.txt", "c/doc23.txt"})),
           Filter("a/", frozenset({"a/doc03.txt", "b/doc04.txt"}))]


@pytest.fixture(scope="module")
def folders(embedder, tmp_path_factory):
    """The same corpus as a flat and an HNSW index, with span vectors (several vectors per document)."""
    base, cfg = tmp_path_factory.mktemp("filter"), embedder.config
    corpus = write_corpus(base / "corpus", texts())
    try:
        embedder.config = replace(cfg, span_tokens=8)
        for kind in ("flat", "hnsw"):
            index_corpus(corpus, base / kind, embedder, progress=False, index_type=kind)
        yield {kind: Searcher(base / kind, embedder) for kind in ("flat", "hnsw")}
    finally:
        embedder.config = cfg


@pytest.mark.parametrize("mode", ["dense", "lexical"])
@pytest.mark.parametrize("where", FILTERS, ids=["prefix", "ids", "both"])
def test_filtered_search_is_the_full_ranking_filtered(folders, mode, where):
    flat = folders["flat"]
    fulls = flat.search(QUERIES, k=flat.count, mode=mode)
    for kind, searcher in folders.items():  # an ANN index is searched exactly too: the flat vectors decide
        for k in (1, 2, 10):
            for full, got in zip(fulls, searcher.search(QUERIES, k=k, mode=mode, where=where)):
                want = [(h.id, round(h.score, 5)) for h in full if where.keep(h.id, h.path)][:k]
                assert [(h.id, round(h.score, 5)) for h in got] == want, (kind, k)
                assert [h.rank for h in got] == list(range(1, len(want) + 1))
    if mode == "dense":  # every document has a cosine: as many hits as the filter keeps, up to k
        kept = sum(where.keep(i, i) for i in texts())
        assert all(len(row) == min(10, kept) for row in flat.search(QUERIES, k=10, mode=mode, where=where))


@pytest.mark.parametrize("where", FILTERS, ids=["prefix", "ids", "both"])
def test_filtered_hybrid_search_returns_only_and_all_kept_documents(folders, where):
    kept = {i for i in texts() if where.keep(i, i)}
    for searcher in folders.values():
        for row in searcher.search(QUERIES, k=30, mode="hybrid", where=where):
            assert {h.id for h in row} == kept and len(row) == len(kept)  # the dense list holds them all
            assert [h.score for h in row] == sorted((h.score for h in row), reverse=True)
        top = searcher.search(QUERIES, k=1, mode="hybrid", where=where)
        assert [r[0].id for r in top] == [r[0].id for r in searcher.search(QUERIES, k=30, mode="hybrid", where=where)]


def test_filters_that_keep_nothing_or_are_malformed(folders):
    searcher = folders["flat"]
    for mode in ("dense", "lexical", "hybrid"):
        assert searcher.search(QUERIES, k=3, mode=mode, where=Filter("zzz/")) == [[], [], []]
    with pytest.raises(ValueError, match="path_prefix must be a non-empty string"):
        Filter("")
    with pytest.raises(TypeError, match="path_prefix must be a string, got int"):
        Filter(3)
    with pytest.raises(ValueError, match="ids is empty"):
        Filter(ids=frozenset())
    with pytest.raises(TypeError, match="ids must be a collection of id strings"):
        Filter(ids="a/doc00.txt")
    with pytest.raises(TypeError, match="where must be a longretr.queries.Filter"):
        searcher.search(QUERIES, k=3, where="a/")
    assert Filter(ids=["x", "x"]).ids == frozenset({"x"})  # any collection; hashable for the server's batches
    assert Filter("a/", frozenset({"y", "x"})).to_dict() == {"path_prefix": "a/", "ids": ["x", "y"]}


def test_cli_search_path_prefix_and_id(tmp_path, tiny_gemma):
    corpus, folder, runner = write_corpus(tmp_path / "corpus", texts(9)), tmp_path / "idx", CliRunner()
    cfg = write_config(tmp_path, tiny_gemma)
    assert runner.invoke(app, ["index", str(corpus), "--index", str(folder), "--model", str(cfg)]).exit_code == 0
    search = ["search", "lazy dog", "--index", str(folder), "--json", "-k", "20"]
    r = runner.invoke(app, [*search, "--path-prefix", "b/"])
    assert r.exit_code == 0, r.output
    assert [h["id"] for h in json.loads(r.output)] and all(h["path"].startswith("b/") for h in json.loads(r.output))
    r = runner.invoke(app, [*search, "--mode", "dense", "--id", "a/doc00.txt", "--id", "c/doc05.txt"])
    assert r.exit_code == 0 and sorted(h["id"] for h in json.loads(r.output)) == ["a/doc00.txt", "c/doc05.txt"]
    assert r.stderr == ""
    r = runner.invoke(app, [*search, "--mode", "dense", "--id", "a/doc00.txt", "--id", "c/doc5.txt"])  # a typo
    assert r.exit_code == 0 and [h["id"] for h in json.loads(r.stdout)] == ["a/doc00.txt"]
    assert r.stderr == f"longretr: warning: {folder} has no document 'c/doc5.txt'; searching the others\n"
    queries = tmp_path / "q.tsv"
    queries.write_text("q1\tlazy dog\nq2\tjson parser\n")
    r = runner.invoke(app, ["search", "--queries", str(queries), "--index", str(folder), "--mode", "dense",
                            "--path-prefix", "c/"])
    rows = [json.loads(line) for line in r.output.splitlines()]
    assert r.exit_code == 0 and [len(row["hits"]) for row in rows] == [3, 3]  # c/ holds 3 of the 9
    assert all(h["id"].startswith("c/") for row in rows for h in row["hits"])
    r = runner.invoke(app, ["search", "lazy dog", "--index", str(folder), "--path-prefix", "/abs/a/"])
    assert r.exit_code == 2 and "no document matches --path-prefix/--id" in r.output, r.output
    assert "relative to the corpus folder, e.g. 'a/doc00.txt'" in r.output  # (before any model is loaded)
    r = runner.invoke(app, ["search", "zebra", "--index", str(folder), "--path-prefix", "a/", "--mode", "lexical"])
    assert r.exit_code == 0 and r.output.strip() == "no results"  # kept documents, none sharing a word
    for bad in (["--path-prefix", ""], ["--id", ""]):
        r = runner.invoke(app, ["search", "lazy dog", "--index", str(folder), *bad])
        assert r.exit_code == 2 and "--path-prefix and --id cannot be empty" in r.output


def test_filter_ids_are_read_once_from_any_iterable(folders):
    wanted = ["a/doc00.txt", "c/doc05.txt"]
    where = Filter(ids=(i for i in wanted))  # a generator: checked, then converted, it was empty and kept nothing
    assert where.ids == frozenset(wanted)
    for row in folders["flat"].search(QUERIES, k=10, mode="dense", where=where):
        assert sorted(h.id for h in row) == wanted
    assert Filter(ids=map(str.upper, ["x"])).ids == frozenset({"X"})
    with pytest.raises(TypeError, match="ids must be a collection of id strings, got int 5"):
        Filter(ids=5)


def test_a_filter_keeping_nothing_is_an_error_through_the_server_too(folders, embedder, monkeypatch):
    """As `longretr search --path-prefix` without a server: a 422 naming an example id, and so the client's one error
    line (exit 2), not an empty answer that reads as 'no results'."""
    service = SearchService(folders["flat"].folder, embedder, reload_interval=0)
    url = "http://longretr.test"
    try:
        with TestClient(create_app(service), base_url=url) as client:
            r = client.post("/search", json={"query": "lazy dog", "filter": {"path_prefix": "zzz/"}})
            assert r.status_code == 422, r.text
            assert "no document matches the filter" in r.json()["error"] and "e.g. 'a/doc00.txt'" in r.json()["error"]
            r = client.post("/search", json={"query": "lazy dog", "filter": {"ids": ["nope", "a/doc00.txt"]}})
            assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == ["a/doc00.txt"]
        monkeypatch.setattr(httpx, "Client", lambda **kw: TestClient(create_app(service), base_url=url))
        runner = CliRunner()
        r = runner.invoke(app, ["search", "lazy dog", "--server", url, "--json", "--path-prefix", "b/"])
        assert r.exit_code == 0 and {h["id"][:2] for h in json.loads(r.stdout)} == {"b/"}, r.output
        r = runner.invoke(app, ["search", "lazy dog", "--server", url, "--id", "a/doc00"])
        assert r.exit_code == 2, r.output
        assert r.output.count("\n") == 1 and "answered 422" in r.output and "no document matches" in r.output
    finally:
        service.close()


def test_several_queries_name_the_blank_one():
    r = CliRunner().invoke(app, ["search", "lazy dog", "json", " ", "--index", "/nonexistent"])
    assert r.exit_code == 2 and r.output == "error: one of the queries is empty: query 3 of 3\n", r.output


def test_an_id_with_undecodable_bytes_does_not_hide_the_others(folders, embedder):
    """A command line's non-UTF-8 bytes (lone surrogates) in one --id, or "\\ud800" in a JSON filter: that id is in no
    document, like a typo, and the others are searched (the filter kept nothing: "no document matches")."""
    where = Filter(ids=frozenset({"a/doc00.txt", "x\udcff"}))
    searcher = folders["flat"]
    assert searcher.check_filter(where) == ["x\udcff"]  # the CLI warns about it, then searches the others
    assert [[h.id for h in row] for row in searcher.search(QUERIES, k=5, mode="dense", where=where)] == \
        [["a/doc00.txt"]] * len(QUERIES)
    assert searcher.search(QUERIES, k=5, mode="dense", where=Filter("a/\udcff")) == [[]] * len(QUERIES)
    service = SearchService(searcher.folder, embedder, reload_interval=0)
    try:
        with TestClient(create_app(service)) as client:
            body = b'{"query": "lazy dog", "filter": {"ids": ["a/doc00.txt", "\\ud800"]}}'
            r = client.post("/search", content=body, headers={"content-type": "application/json"})
            assert r.status_code == 200 and [h["id"] for h in r.json()["hits"]] == ["a/doc00.txt"], r.text
    finally:
        service.close()


def test_threads_share_one_searcher_with_filters(folders, embedder):
    """The per-filter cache was a plain dict: threads evicting from it at once raised RuntimeError and KeyError."""
    searcher, errors, seen = Searcher(folders["flat"].folder, embedder), [], []
    ids = searcher.snapshot.docs.column("id").to_pylist()

    def run(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(300):  # far more distinct filters than the cache keeps (64): it evicts all the time
                where = Filter(ids=frozenset(rng.sample(ids, 3)))
                seen.append((where, searcher.search(["lazy dog json"], 3, mode="lexical", where=where)))
        except Exception as e:  # noqa: BLE001 -- reported below, whatever it is
            errors.append(e)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(6)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch often enough to meet in the cache
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors[:3]
    alone = Searcher(folders["flat"].folder, embedder)
    assert len(seen) == 1800 and all(alone.search(["lazy dog json"], 3, mode="lexical", where=w) == got
                                     for w, got in seen[::10])
