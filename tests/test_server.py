import json
import shutil
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from safetensors.torch import load_file, save_file
from tiny_models import write_config, write_corpus, write_lora
from typer.testing import CliRunner

from longretr import store
from longretr.cli import app as cli_app
from longretr.embedder import Embedder
from longretr.indexer import index_corpus
from longretr.queries import Filter
from longretr.search import Searcher
from longretr.server import Limits, SearchService, create_app

TEXTS = {
    "animals/fox.txt": "# Fox\nthe quick brown fox jumps over a lazy dog",
    "animals/dog.txt": "# Dog\na lazy dog while the brown fox jumps",
    "formats/json.md": "# JSON\nparsing json and csv with regular expressions",
    "formats/zip.txt": "computing a digest of every file in the archive",
    "time.rst": "Times\n=====\ndates times threads and the command line arguments",
    "cli.txt": "# CLI\nparsing command line arguments with threads",
}


@pytest.fixture(scope="module")
def index_folder(embedder, tmp_path_factory):
    base = tmp_path_factory.mktemp("srv")
    corpus = write_corpus(base / "corpus", TEXTS)
    index_corpus(corpus, base / "idx", embedder, progress=False, ranking={"mode": "dense"})
    return base / "idx"


@pytest.fixture()
def service(index_folder, embedder):
    svc = SearchService(index_folder, embedder, reload_interval=0)
    yield svc
    svc.close()


@pytest.fixture()
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def test_search_health_and_stats(client, service, index_folder, embedder):
    r = client.post("/search", json={"query": "lazy dog", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    direct = Searcher(index_folder, embedder).search(["lazy dog"], 3)[0]
    assert [h["id"] for h in body["hits"]] == [h.id for h in direct]
    assert [h["score"] for h in body["hits"]] == pytest.approx([h.score for h in direct], abs=1e-5)
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
    assert set(body["hits"][0]) >= {"id", "score", "title", "path", "snippet", "rank"}
    assert body["index_version"] == 1 and body["k"] == 3 and body["took_ms"] > 0
    assert client.post("/search", json={"query": "json"}).json()["hits"].__len__() == len(TEXTS)  # k defaults to 10

    assert client.head("/health").status_code == 200
    health = client.get("/health")
    assert health.status_code == 200 and health.json() == {"status": "ok", "index_version": 1,
                                                           "documents": len(TEXTS), "warnings": []}
    stats = client.get("/stats").json()
    assert stats["documents"] == len(TEXTS) and stats["model"] == "tiny"
    assert stats["index_type"] == store.read_manifest(index_folder)["index_type"]
    assert body["mode"] == stats["default_mode"]  # a request without a mode reports the one it got
    assert stats["queries"] == 2 and stats["rejected"] == 0 and stats["uptime_s"] >= 0
    lat = stats["latency_ms"]
    assert lat["window"] == 2 and 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_filters_keep_only_matching_hits_in_ranked_order(client):
    full = [h["id"] for h in client.post("/search", json={"query": "brown fox", "k": 10}).json()["hits"]]
    r = client.post("/search", json={"query": "brown fox", "k": 10, "filter": {"path_prefix": "formats/"}})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert [h["id"] for h in hits] == [i for i in full if i.startswith("formats/")]
    assert [h["rank"] for h in hits] == [1, 2]
    wanted = ["cli.txt", "animals/dog.txt", "nope.txt"]
    hits = client.post("/search", json={"query": "brown fox", "k": 1, "filter": {"ids": wanted}}).json()["hits"]
    assert [h["id"] for h in hits] == [next(i for i in full if i in wanted)]
    both = {"path_prefix": "animals/", "ids": ["animals/dog.txt", "cli.txt"]}
    hits = client.post("/search", json={"query": "brown fox", "filter": both}).json()["hits"]
    assert [h["id"] for h in hits] == ["animals/dog.txt"]


def test_document_endpoint_gives_the_indexed_text_or_a_part_of_it(client):
    r = client.get("/document", params={"id": "formats/json.md"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["text"] == TEXTS["formats/json.md"] and doc["title"] == "JSON" and doc["index_version"] == 1
    assert (doc["start"], doc["end"], doc["length"]) == (0, len(doc["text"]), len(doc["text"]))
    part = client.get("/document", params={"id": "formats/json.md", "start": 7, "end": 11}).json()
    assert part["text"] == "pars" == TEXTS["formats/json.md"][7:11] and part["length"] == doc["length"]
    r = client.get("/document", params={"id": "formats/jsn.md"})
    assert r.status_code == 404 and "did you mean 'formats/json.md'" in r.json()["error"]
    with pytest.MonkeyPatch.context() as m:  # a large index: no suggestions (each would cost seconds)
        m.setattr(store, "SUGGEST_MAX_IDS", len(TEXTS) - 1)
        r = client.get("/document", params={"id": "formats/jsn.md"})
    assert r.status_code == 404 and "did you mean" not in r.json()["error"]
    for bad in ({"id": "cli.txt", "start": 9, "end": 3}, {"id": "cli.txt", "start": 10_000}, {"id": "cli.txt",
                "start": -1}, {"id": "cli.txt", "start": "x"}, {}):
        r = client.get("/document", params=bad)
        assert r.status_code == 422 and "error" in r.json(), (bad, r.text)


BAD = [
    (b"{not json", 400, "not valid JSON"),
    (b"", 400, "empty request body"),
    (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
    (b'["lazy dog"]', 422, "must be a JSON object"),
    (b'{"k": 3}', 422, "missing field 'query'"),
    (b'{"q": "dog"}', 422, "unknown field(s) ['q']"),
    (b'{"query": ""}', 422, "'query' is empty"),
    (b'{"query": "   \\n "}', 422, "'query' is empty"),
    (b'{"query": 42}', 422, "'query' must be a string"),
    (b'{"query": "\\ud800 dog"}', 422, "lone surrogate"),
    (json.dumps({"query": "dog " * 600}).encode(), 413, "the limit is 2000"),
    (b'{"query": "dog", "k": 0}', 422, "between 1 and 100"),
    (b'{"query": "dog", "k": -5}', 422, "between 1 and 100"),
    (b'{"query": "dog", "k": 101}', 422, "between 1 and 100"),
    (b'{"query": "dog", "k": "5"}', 422, "'k' must be an integer"),
    (b'{"query": "dog", "k": 2.5}', 422, "'k' must be an integer"),
    (b'{"query": "dog", "k": true}', 422, "'k' must be an integer"),
    (b'{"query": "dog", "k": NaN}', 422, "'k' must be an integer"),
    (b'{"query": "dog", "filter": "animals/"}', 422, "'filter' must be an object"),
    (b'{"query": "dog", "filter": {"path": "a"}}', 422, "unknown filter key(s) ['path']"),
    (b'{"query": "dog", "filter": {"path_prefix": 3}}', 422, "'path_prefix' must be a non-empty string"),
    (b'{"query": "dog", "filter": {"ids": "cli.txt"}}', 422, "'ids' must be a non-empty list"),
    (b'{"query": "dog", "filter": {"ids": []}}', 422, "'ids' must be a non-empty list"),
    (json.dumps({"query": "dog", "filter": {"ids": [str(i) for i in range(1001)]}}).encode(), 422, "limit is 1000"),
    (b'{"query": "dog", "mode": 7}', 422, "'mode' must be a non-empty string"),
    (b'{"query": "' + b"x" * 70_000 + b'"}', 413, "the limit is 65536"),
]


def test_burst_of_bad_requests_then_a_good_one(client, service):
    for body, status, message in BAD:
        r = client.post("/search", content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, (body[:60], r.text)
        assert message in r.json()["error"], (body[:60], r.json())
    # a body without Content-Length (chunked) is counted as it streams in
    r = client.post("/search", content=(b"x" * 10_000 for _ in range(10)))
    assert r.status_code == 413 and "exceeds the limit of 65536" in r.json()["error"]
    assert client.get("/search").status_code == 405
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    r = client.post("/search", json={"query": "lazy dog", "k": 2})
    assert r.status_code == 200 and len(r.json()["hits"]) == 2
    stats = client.get("/stats").json()
    assert stats["rejected"] == len(BAD) + 1 and stats["queries"] == 1 and stats["failed"] == 0
    assert client.get("/health").json()["status"] == "ok"


class CountingEncoder:
    """Wraps encode_queries: counts calls and batch sizes, optionally slow so requests pile up."""

    def __init__(self, embedder, delay=0.0, fail_on=None):
        self.inner, self.delay, self.fail_on = embedder.encode_queries, delay, fail_on
        self.batches: list[int] = []

    def __call__(self, queries):
        self.batches.append(len(queries))
        if self.fail_on and any(self.fail_on in q for q in queries):
            raise ValueError(f"refusing query containing {self.fail_on!r}")
        time.sleep(self.delay)
        return self.inner(queries)


def post_concurrently(client, bodies):
    barrier, out = threading.Barrier(len(bodies)), [None] * len(bodies)

    def go(i):
        barrier.wait()
        out[i] = client.post("/search", json=bodies[i])

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_requests_share_encoder_calls(index_folder, embedder, monkeypatch):
    counter = CountingEncoder(embedder, delay=0.2)
    monkeypatch.setattr(embedder, "encode_queries", counter)
    queries = [f"{w} dog" for w in ("lazy", "brown", "quick", "json", "csv", "archive", "dates", "threads")] * 2
    # hybrid queries of any k share a group, so do dense ones of one k with or without the index's mode named
    ks = [1 + i % 3 if i % 2 == 0 else 3 for i in range(len(queries))]
    modes = ["hybrid" if i % 2 == 0 else "dense" if i % 4 == 1 else None for i in range(len(queries))]
    requests = [{"query": q, "k": k, **({"mode": m} if m else {})} for q, k, m in zip(queries, ks, modes)]
    svc = SearchService(index_folder, embedder, batch_wait_ms=50, reload_interval=0)
    try:
        with TestClient(create_app(svc)) as client:
            responses = post_concurrently(client, requests)
            stats = client.get("/stats").json()
    finally:
        svc.close()
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    # 16 concurrent requests, far fewer encoder calls: they were micro-batched
    assert len(counter.batches) < len(queries) and max(counter.batches) > 1, counter.batches
    assert sum(counter.batches) == len(queries)
    assert stats["batching"]["max_seen"] > 1 and stats["search_calls"] == len(counter.batches) \
        <= 2 * stats["batching"]["batches"]  # a hybrid and a dense group at most
    monkeypatch.undo()
    searcher = Searcher(index_folder, embedder)
    for q, k, m, r in zip(queries, ks, modes, responses):  # batching does not change any request's answer
        direct = searcher.search([q], k, mode=m)[0]
        assert [h["id"] for h in r.json()["hits"]] == [h.id for h in direct]
        assert [h["score"] for h in r.json()["hits"]] == pytest.approx([h.score for h in direct], abs=1e-4)


def test_a_failing_query_does_not_fail_its_batch(index_folder, embedder, monkeypatch):
    counter = CountingEncoder(embedder, delay=0.1, fail_on="boom")
    monkeypatch.setattr(embedder, "encode_queries", counter)
    svc = SearchService(index_folder, embedder, batch_wait_ms=50, reload_interval=0)
    try:
        with TestClient(create_app(svc)) as client:
            responses = post_concurrently(client, [{"query": q} for q in ["lazy dog", "boom", "json", "csv"]])
    finally:
        svc.close()
    assert [r.status_code for r in responses] == [200, 422, 200, 200]
    assert "refusing query containing 'boom'" in responses[1].json()["error"]
    assert max(counter.batches) > 1  # they did share a batch before the retry one by one


class RecordingSearcher:
    """Stands in for a Searcher with search modes (lexical, hybrid) to check what the server forwards."""

    def __init__(self, real):
        self.snapshot, self.ranking, self.real, self.calls = real.snapshot, real.ranking, real, []
        self.version = real.version
        self.check_filter = real.check_filter

    def search(self, queries, k=10, mode=None, where=None):
        self.calls.append((list(queries), k, mode, where))
        return self.real.search(queries, k, mode=mode, where=where)


def test_mode_and_filter_are_forwarded_as_given(service, client):
    service.searcher = RecordingSearcher(service.searcher)
    assert client.post("/search", json={"query": "dog", "k": 2, "mode": "lexical"}).status_code == 200
    assert client.post("/search", json={"query": "dog", "k": 2}).status_code == 200
    r = client.post("/search", json={"query": "dog", "mode": "fuzzy"})
    assert r.status_code == 422 and "search mode 'fuzzy' is not one of" in r.json()["error"]
    r = client.post("/search", json={"query": "dog", "filter": {"ids": ["cli.txt", "time.rst"], "path_prefix": "c"}})
    assert [h["id"] for h in r.json()["hits"]] == ["cli.txt"]
    assert service.searcher.calls == [(["dog"], 2, "lexical", None), (["dog"], 2, "dense", None),  # the index's
                                      (["dog"], 10, "fuzzy", None),
                                      (["dog"], 10, "dense", Filter("c", frozenset({"cli.txt", "time.rst"})))]


def test_lexical_requests_do_not_wait_behind_an_encoder_batch(index_folder, embedder, monkeypatch):
    monkeypatch.setattr(embedder, "encode_queries", CountingEncoder(embedder, delay=1.5))
    svc = SearchService(index_folder, embedder, reload_interval=0)
    try:
        with TestClient(create_app(svc)) as client:
            dense = threading.Thread(target=lambda: client.post("/search", json={"query": "dog", "mode": "dense"}))
            dense.start()
            assert wait_for(lambda: svc.counts["batches"] == 1)  # the encoder is busy for 1.5 s
            start = time.monotonic()
            r = client.post("/search", json={"query": "lazy dog", "mode": "lexical", "k": 2,
                                             "filter": {"path_prefix": "animals/"}})
            took = time.monotonic() - start
            assert dense.is_alive() and took < 1.0, took
            assert r.status_code == 200
            assert [h["id"] for h in r.json()["hits"]] == ["animals/dog.txt", "animals/fox.txt"]
            r = client.post("/search", json={"query": "dog", "mode": "lexical", "filter": {"path_prefix": "nope/"}})
            dense.join()
            assert r.status_code == 422 and "no document matches the filter" in r.json()["error"]
    finally:
        svc.close()


def test_queue_limit_and_timeout_answer_503_and_504(index_folder, embedder, monkeypatch):
    svc = SearchService(index_folder, embedder, limits=Limits(max_queue=0), reload_interval=0)
    with TestClient(create_app(svc)) as client:
        r = client.post("/search", json={"query": "dog"})
    svc.close()
    assert r.status_code == 503 and "server busy" in r.json()["error"] and r.headers["retry-after"] == "1"
    monkeypatch.setattr(embedder, "encode_queries", CountingEncoder(embedder, delay=0.5))
    svc = SearchService(index_folder, embedder, limits=Limits(request_timeout_s=0.05), reload_interval=0)
    with TestClient(create_app(svc)) as client:
        r = client.post("/search", json={"query": "dog"})
        assert r.status_code == 504 and "took over" in r.json()["error"]
        time.sleep(0.6)  # the abandoned job finishes; the worker carries on
        monkeypatch.undo()
        assert client.post("/search", json={"query": "dog"}).status_code == 200
    svc.close()


def test_index_reload_on_new_version(tmp_path, embedder):
    corpus = write_corpus(tmp_path / "corpus", dict(list(TEXTS.items())[:3]))
    folder = tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False, ranking={"mode": "dense"})
    svc = SearchService(folder, embedder, reload_interval=0.05)
    try:
        with TestClient(create_app(svc)) as client:
            assert client.get("/health").json()["documents"] == 3
            write_corpus(corpus, {"new/arch.txt": "computing a digest of every file in the archive"})
            index_corpus(corpus, folder, embedder, progress=False, ranking={"mode": "dense"})
            deadline = time.monotonic() + 10
            while client.get("/health").json()["index_version"] != 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            r = client.post("/search", json={"query": "digest of every file in the archive", "k": 4}).json()
            assert r["index_version"] == 2 and r["hits"][0]["id"] == "new/arch.txt"
            assert client.get("/stats").json()["documents"] == 4
            # a damaged manifest is reported, and the last good version keeps answering
            (folder / store.MANIFEST).write_text("{")
            deadline = time.monotonic() + 10
            while client.get("/stats").json()["reload_error"] is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "unreadable manifest" in client.get("/stats").json()["reload_error"]
            health = client.get("/health").json()  # where an operator looks: still ok, and why it is stuck
            assert health["status"] == "ok" and "still serving version 2: " in health["warnings"][0]
            assert "unreadable manifest" in health["warnings"][0]
            r = client.post("/search", json={"query": "lazy dog"})
            assert r.status_code == 200 and r.json()["index_version"] == 2
    finally:
        svc.close()


def test_a_version_that_cannot_be_loaded_is_not_loaded_again_until_it_changes(tmp_path, embedder, monkeypatch):
    """A served index whose new version fails to load (another model's, here) was fully re-read every interval."""
    import longretr.server

    folder = tmp_path / "idx"
    index_corpus(write_corpus(tmp_path / "corpus", dict(list(TEXTS.items())[:3])), folder, embedder, progress=False)
    loads = []
    monkeypatch.setattr(longretr.server, "Searcher", lambda *a: loads.append(1) or Searcher(*a))
    svc = SearchService(folder, embedder, reload_interval=0.02)
    try:
        manifest = store.read_manifest(folder)
        bad = {**manifest, "version": 2, "model_fingerprint": "0" * 16}
        (folder / store.MANIFEST).write_text(json.dumps(bad))
        time.sleep(0.5)
        assert "ModelMismatch" in svc.stats()["reload_error"] and len(loads) == 2  # served, then one try
        (folder / store.MANIFEST).write_text(json.dumps({**bad, "version": 3}))  # changed: tried again
        time.sleep(0.3)
        assert len(loads) == 3
        monkeypatch.setattr(longretr.server, "RELOAD_RETRY_S", 0.1)  # the same manifest, tried again now and then
        time.sleep(0.5)
        assert 4 <= len(loads) <= 10
        (folder / store.MANIFEST).write_text(json.dumps(manifest))  # the served one back: nothing to load
        time.sleep(0.3)
        settled = len(loads)
        time.sleep(0.3)
        assert len(loads) == settled and svc.stats()["reload_error"] is None and svc.version == 1
    finally:
        svc.close()


def test_a_replaced_searcher_is_freed_without_the_garbage_collector(index_folder, embedder):
    """A server keeps one Searcher per index version it swapped in; a reference cycle kept each until a full gc."""
    import gc
    import weakref

    gc.disable()
    try:
        searcher = Searcher(index_folder, embedder)
        searcher.check_filter(Filter("animals/", None))  # fills the per-filter cache
        gone = weakref.ref(searcher)
        del searcher
        assert gone() is None
    finally:
        gc.enable()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_longretr_serve_subprocess_and_search_client(index_folder, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "longretr.cli", "serve", "--index", str(index_folder),
                             "--port", str(port), "--reload-interval", "0"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        r = httpx.post(f"{url}/search", json={"query": "lazy dog", "k": 2})
        assert r.status_code == 200 and len(r.json()["hits"]) == 2
        assert httpx.post(f"{url}/search", content=b"{oops").status_code == 400

        runner = CliRunner()
        out = runner.invoke(cli_app, ["search", "lazy dog", "--server", url, "-k", "2", "--json"])
        assert out.exit_code == 0, out.output
        assert json.loads(out.output) == r.json()["hits"]
        out = runner.invoke(cli_app, ["search", "lazy dog", "--server", url, "-k", "2"])
        first = r.json()["hits"][0]
        assert out.exit_code == 0 and f"  1  {first['score']:.4f}  {first['title']}" in out.output
        queries = tmp_path / "q.tsv"
        queries.write_text("q1\tlazy dog\nq2\tjson csv\nq3\tthreads\n")
        run = tmp_path / "run.trec"
        out = runner.invoke(cli_app, ["search", "--queries", str(queries), "--server", url, "-k", "2",
                                      "--output", str(run)])
        assert out.exit_code == 0, out.output
        lines = run.read_text().splitlines()
        assert len(lines) == 6 and lines[0].startswith("q1 Q0 ") and lines[4].startswith("q3 Q0 ")
        queries.write_text(f"q1\tlazy dog\nq2\t{'dog ' * 600}\nq3\tthreads\n")  # the server refuses one
        out = runner.invoke(cli_app, ["search", "--queries", str(queries), "--server", url, "--output", str(run)])
        assert out.exit_code == 2 and "query 'q2': " in out.output and "answered 413" in out.output, out.output
        out = runner.invoke(cli_app, ["search", "brown fox", "--server", url, "--json", "--path-prefix", "formats/",
                                      "--id", "formats/zip.txt", "--id", "cli.txt"])
        assert out.exit_code == 0, out.output
        assert [h["id"] for h in json.loads(out.output)] == ["formats/zip.txt"]  # the filter went to the server
        out = runner.invoke(cli_app, ["show", "formats/json.md", "--server", url, "--chars", "7-11", "--json"])
        assert out.exit_code == 0 and json.loads(out.stdout)["text"] == "pars", out.output
        out = runner.invoke(cli_app, ["show", "formats/jsn.md", "--server", url])
        assert out.exit_code == 2 and "answered 404" in out.output and "did you mean 'formats/json.md'" in out.output
        out = runner.invoke(cli_app, ["search", "x", "--server", url, "-k", "500"])
        assert out.exit_code == 2 and "answered 422" in out.output and "between 1 and 100" in out.output
        assert "error" not in (tmp_path / "serve.log").read_text().lower()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "on http://127.0.0.1:" in (tmp_path / "serve.log").read_text()
    out = CliRunner().invoke(cli_app, ["search", "x", "y", "--server", url])
    assert out.exit_code == 2 and "cannot reach the server" in out.output and "query '" not in out.output


@pytest.mark.parametrize("option", [["--batch-wait-ms", "nan"], ["--batch-wait-ms", "inf"],
                                    ["--reload-interval", "inf"], ["--reload-interval", "-1"], ["--max-batch", "0"]])
def test_serve_refuses_settings_that_cannot_work(tmp_path, option):
    # refused before the index or model loads: a nan wait never compares, an infinite one leaves a lone query waiting
    result = CliRunner().invoke(cli_app, ["serve", "--index", str(tmp_path / "none"), *option])
    assert result.exit_code == 2 and "finite and >= 0" in result.output, result.output


def test_an_integer_too_long_for_python_is_a_bad_k_not_bad_json():
    from longretr.server import BadRequest, parse_search_request

    with pytest.raises(BadRequest) as caught:  # valid JSON; Python refuses ints of over 4300 digits
        parse_search_request(b'{"query": "dog", "k": ' + b"9" * 5000 + b"}", Limits())
    assert caught.value.status == 422 and "'k' must be an integer" in caught.value.message


def wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


@pytest.mark.parametrize("mode", ["lexical", "dense"])
def test_an_answer_names_the_mode_its_version_searched_in(tmp_path, embedder, mode):
    """The answer's mode was read from the index current when the answer was written: a reload during the search
    (to a version whose default mode is another) made it name a mode that was not used."""
    corpus = write_corpus(tmp_path / "corpus", dict(list(TEXTS.items())[:3]))
    for name, default in (("a", mode), ("b", "hybrid")):
        index_corpus(corpus, tmp_path / name, embedder, progress=False, ranking={"mode": default})
    svc = SearchService(tmp_path / "a", embedder, reload_interval=0)
    served, other = svc.searcher, Searcher(tmp_path / "b", embedder)
    real = served.search

    def reloaded_meanwhile(*args, **kwargs):
        svc.searcher = other
        return real(*args, **kwargs)

    served.search = reloaded_meanwhile
    try:
        with TestClient(create_app(svc)) as client:
            assert client.post("/search", json={"query": "lazy dog"}).json()["mode"] == mode
    finally:
        svc.close()


def test_a_damaged_lexical_file_leaves_dense_search_and_is_not_reloaded_to(tmp_path, embedder):
    corpus, folder = write_corpus(tmp_path / "corpus", dict(list(TEXTS.items())[:3])), tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False)
    lexical = folder / store.read_manifest(folder)["files"]["lexical"] / "lexical.json"
    good = lexical.read_bytes()
    lexical.write_text("{")
    svc = SearchService(folder, embedder, reload_interval=0.05)  # a server started on it serves dense search
    try:
        with TestClient(create_app(svc)) as client:
            assert "lexical-000001: truncated" in client.get("/health").json()["warnings"][0]
            assert client.post("/search", json={"query": "lazy dog", "mode": "dense"}).status_code == 200
            r = client.post("/search", json={"query": "lazy dog", "mode": "hybrid"})
            assert r.status_code == 500 and "dense mode works meanwhile" in r.json()["error"]
            time.sleep(0.5)  # nothing changed on disk: not read again
            assert svc.counts["reloads"] == 0 and client.get("/stats").json()["warnings"]
            lexical.write_bytes(good)  # restored in place: the same version, read again
            assert wait_for(lambda: not client.get("/stats").json()["warnings"]), svc.stats()
            assert svc.version == 1 and svc.counts["reloads"] == 1
            assert client.post("/search", json={"query": "lazy dog", "mode": "hybrid"}).status_code == 200
            # a new version whose lexical file is damaged (written whole at once, or the server may load it before
            # the damage): the whole one keeps serving every mode
            manifest = store.read_manifest(folder)
            shutil.copytree(folder / manifest["files"]["lexical"], folder / "lexical-damaged")
            (folder / "lexical-damaged" / "lexical.json").write_text("{")
            files = {**manifest["files"], "lexical": "lexical-damaged"}
            (folder / "next.json").write_text(json.dumps({**manifest, "version": 2, "files": files}))
            (folder / "next.json").replace(folder / store.MANIFEST)
            assert wait_for(lambda: svc.reload_error is not None) and "lexical-damaged: truncated" in svc.reload_error
            assert svc.version == 1
            assert client.post("/search", json={"query": "dog", "mode": "lexical"}).status_code == 200
    finally:
        svc.close()


def test_reload_when_the_folder_is_replaced_by_a_fresh_build(tmp_path, embedder):
    # a fresh build is version 1 again: the server must not keep serving the old documents as "the same version"
    folders = {}
    for name, texts in (("a", dict(list(TEXTS.items())[:3])), ("b", dict(list(TEXTS.items())[3:5]))):
        corpus = write_corpus(tmp_path / f"corpus-{name}", texts)
        folders[name] = tmp_path / f"idx-{name}"
        index_corpus(corpus, folders[name], embedder, progress=False, ranking={"mode": "dense"})
    served, aside = tmp_path / "served", tmp_path / "aside"
    folders["a"].rename(served)
    svc = SearchService(served, embedder, reload_interval=0.05)
    try:
        served.rename(aside)  # moved away and back: the error it caused goes, nothing is reloaded
        assert wait_for(lambda: svc.reload_error is not None) and "manifest.json is gone" in svc.reload_error
        aside.rename(served)
        assert wait_for(lambda: svc.reload_error is None), svc.reload_error
        assert svc.counts["reloads"] == 0
        served.rename(aside)
        folders["b"].rename(served)
        assert wait_for(lambda: svc.searcher.count == 2), svc.stats()
        assert svc.version == 1 and svc.reload_error is None and svc.counts["reloads"] == 1
    finally:
        svc.close()


class FakeServer:
    """Another HTTP service on the port `search --server` is given: answers every POST with (status, JSON)."""

    def __init__(self, status, body):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        data = json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("status, body, message", [
    (404, [1, 2], "answered 404: [1, 2]"),
    (500, 7, "answered 500: 7"),
    (200, {"ok": True}, "not as `longretr serve` does"),
    (200, {"hits": 5}, "not as `longretr serve` does"),
    (200, {"hits": [{"id": "x"}]}, "not as `longretr serve` does"),
    (200, None, "not as `longretr serve` does"),
])
def test_search_client_against_a_server_that_is_not_longretr(tmp_path, status, body, message):
    fake = FakeServer(status, body)
    try:
        out = CliRunner().invoke(cli_app, ["search", "dog", "--server", fake.url, "--index", str(tmp_path)])
    finally:
        fake.close()
    assert out.exit_code == 2 and message in out.output, (out.output, out.exception)


@pytest.mark.parametrize("url, message", [("http://[::1", "not a valid server URL"), ("", "--server is empty")])
def test_search_client_refuses_bad_server_urls(tmp_path, url, message):
    # an empty --server (an unset $URL) must not fall back to searching --index here, loading its model
    out = CliRunner().invoke(cli_app, ["search", "dog", "--server", url, "--index", str(tmp_path / "none")])
    assert out.exit_code == 2 and message in out.output, (out.output, out.exception)


def test_the_python_client_checks_its_arguments_before_sending(monkeypatch):
    from longretr.client import search_remote

    monkeypatch.setattr(httpx.Client, "post", lambda *a, **kw: pytest.fail("nothing may be sent"))
    for args, error, message in [(("smtp",), TypeError, "wrap it in a list"),
                                 ((["dog"], 0), ValueError, "k must be at least 1"),
                                 ((["dog"], 2, None, {"ids": ["a"]}), TypeError, "where must be a longretr"),
                                 ((["\ud800"],), ValueError, "not valid Unicode"),
                                 ((["dog"], 2, None, Filter("a\udcff/")), ValueError, "filter path_prefix and ids")]:
        with pytest.raises(error, match=message):  # a str was sent as one-character queries, {"ids"} crashed
            search_remote("http://127.0.0.1:9", *args)
    for args in (["zip\udcff"], ["dog", "--path-prefix", "a\udcff/"]):  # a traceback from the CLI
        out = CliRunner().invoke(cli_app, ["search", *args, "--server", "http://127.0.0.1:9"])
        assert out.exit_code == 2 and "not valid Unicode" in out.output, out.output


def test_a_new_version_without_its_ann_file_is_served_exactly(tmp_path, embedder):
    """It loses no mode (dense search reads every vector meanwhile), so it is loaded: documents removed from the
    index must not stay in the answers."""
    corpus, folder = write_corpus(tmp_path / "corpus", dict(list(TEXTS.items())[:3])), tmp_path / "idx"
    index_corpus(corpus, folder, embedder, progress=False, index_type="hnsw")
    svc = SearchService(folder, embedder, reload_interval=0.05)
    try:
        manifest = store.read_manifest(folder)
        (folder / "ann-damaged").write_bytes(b"junk")
        files = {**manifest["files"], "ann": "ann-damaged"}
        (folder / "next.json").write_text(json.dumps({**manifest, "version": 2, "files": files}))
        (folder / "next.json").replace(folder / store.MANIFEST)
        assert wait_for(lambda: svc.version == 2), svc.stats()
        assert "ann-damaged: truncated" in svc.stats()["warnings"][0] and svc.reload_error is None
    finally:
        svc.close()


def test_serve_fails_fast_on_a_taken_port(index_folder, monkeypatch):
    import longretr.server

    def no_loading(*args, **kwargs):
        raise AssertionError("the index and model were loaded before the port was checked")

    monkeypatch.setattr(longretr.server, "SearchService", no_loading)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = CliRunner().invoke(cli_app, ["serve", "--index", str(index_folder), "--port", str(port)])
    assert out.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}: Address already in use" in out.output, \
        (out.output, out.exception)


def test_serve_names_a_model_it_cannot_load(tiny_gemma, tmp_path):
    import shutil

    from tiny_models import write_config

    from longretr.embedder import Embedder

    backbone = shutil.copytree(tiny_gemma, tmp_path / "model")
    config = write_config(tmp_path, backbone)
    index_corpus(write_corpus(tmp_path / "corpus", TEXTS), tmp_path / "idx", Embedder(str(config)), progress=False)
    (backbone / "model.safetensors").unlink()
    out = CliRunner().invoke(cli_app, ["serve", "--index", str(tmp_path / "idx"), "--port", str(free_port())])
    assert out.exit_code == 2 and f"model 'tiny': cannot load its weights or tokenizer from {backbone}" in out.output, \
        (out.output, out.exception)


def test_the_search_client_and_lexical_search_import_no_model_code():
    # `longretr search --server` should take about as long as the server's answer, lexical search about as long as
    # reading the index: torch, transformers and peft take seconds to import, faiss and fastapi a fraction.
    probe = ("import sys, longretr.cli, longretr.client; heavy = ['torch', 'transformers', 'peft', 'faiss', "
             "'fastapi']; print([m for m in heavy if m in sys.modules]); import longretr.search; "
             "print([m for m in heavy if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["[]", "['faiss']"], out


def adapted_index(tmp_path, tiny_gemma, damage: str):
    """An index built with a LoRA adapter, which is then moved away ("gone") or rewritten ("changed"), as in
    test_lifecycle's adapter-gone test; returns the index folder, the adapter folder and where it was moved to."""
    adapter, elsewhere = tmp_path / "adapter", tmp_path / "elsewhere"
    write_lora(adapter, {f"layers.{i}.self_attn.q_proj": (32, 32) for i in range(4)}, prefix="")
    cfg = write_config(tmp_path, tiny_gemma, name="adapted", adapter=str(adapter))
    index_corpus(write_corpus(tmp_path / "corpus", TEXTS), tmp_path / "idx", Embedder(str(cfg)), progress=False)
    if damage == "gone":
        shutil.move(adapter, elsewhere)
    else:
        shutil.copytree(adapter, elsewhere)
        weights = adapter / "adapter_model.safetensors"
        save_file({name: 2 * t for name, t in load_file(weights).items()}, weights)
    return tmp_path / "idx", adapter, elsewhere


ADAPTER_DAMAGE = [("gone", "adapter folder {adapter} not found"), ("changed", "whose adapter files have changed since")]


@pytest.mark.parametrize("damage, reason", ADAPTER_DAMAGE)
def test_an_index_whose_adapter_is_gone_or_changed_is_served_for_lexical_search(tmp_path, tiny_gemma, damage,
                                                                                 reason):
    # the server loaded the model at start, so it could not serve such an index at all, though lexical search works
    folder, adapter, _ = adapted_index(tmp_path, tiny_gemma, damage)
    reason = reason.format(adapter=adapter)
    svc = SearchService(folder, reload_interval=0)
    try:
        with TestClient(create_app(svc)) as client:
            r = client.post("/search", json={"query": "lazy dog", "k": 2, "mode": "lexical"})
            assert r.status_code == 200 and len(r.json()["hits"]) == 2, r.text
            for mode in ({"mode": "dense"}, {"mode": "hybrid"}, {}):  # {}: the index's default, hybrid
                r = client.post("/search", json={"query": "lazy dog", **mode})
                error = r.json()["error"]
                assert r.status_code == 503 and "retry-after" not in r.headers, r.text  # retrying will not help
                assert error.startswith('dense and hybrid search are unavailable (send "mode": "lexical"): ')
                assert reason in error and "--mode lexical" in error, error  # Searcher's words, naming the way out
            assert client.post("/search", json={"query": "dog", "mode": "fuzzy"}).status_code == 422
            health = client.get("/health").json()
            assert health["status"] == "ok" and any(reason in w for w in health["warnings"]), health
            stats = client.get("/stats").json()
            assert (stats["queries"], stats["failed"], stats["rejected"]) == (1, 3, 1), stats
    finally:
        svc.close()


def test_serve_starts_on_an_index_whose_adapter_is_gone_and_says_dense_search_is_unavailable(tmp_path, tiny_gemma,
                                                                                            monkeypatch):
    import uvicorn

    folder, adapter, _ = adapted_index(tmp_path, tiny_gemma, "gone")
    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: served.append(server))
    out = CliRunner().invoke(cli_app, ["serve", "--index", str(folder), "--port", str(free_port()),
                                       "--reload-interval", "0"])
    assert out.exit_code == 0 and served, (out.output, out.exception)
    assert "longretr serve: warning: dense and hybrid search are unavailable" in out.output, out.output
    assert f"adapter folder {adapter} not found" in out.output and "--mode lexical" in out.output, out.output


@pytest.mark.parametrize("way_out", ["restored", "rebuilt"])
def test_dense_search_comes_back_when_the_model_does(tmp_path, tiny_gemma, embedder, monkeypatch, way_out):
    import longretr.server

    monkeypatch.setattr(longretr.server, "RELOAD_RETRY_S", 0.1)  # how often a model that could not load is retried
    folder, adapter, elsewhere = adapted_index(tmp_path, tiny_gemma, "gone")
    svc = SearchService(folder, reload_interval=0.05)
    try:
        with TestClient(create_app(svc)) as client:
            assert client.post("/search", json={"query": "lazy dog", "mode": "dense"}).status_code == 503
            if way_out == "restored":  # in place: the same index version
                shutil.move(elsewhere, adapter)
            else:  # re-indexed with a model that loads: a new version
                monkeypatch.setattr(longretr.server, "RELOAD_RETRY_S", 3600)
                index_corpus(tmp_path / "corpus", folder, embedder, rebuild=True, progress=False)
            assert wait_for(lambda: svc.model_error is None), svc.stats()
            r = client.post("/search", json={"query": "lazy dog", "k": 2, "mode": "dense"})
            assert r.status_code == 200 and len(r.json()["hits"]) == 2, r.text
            assert svc.warnings() == []
    finally:
        svc.close()
