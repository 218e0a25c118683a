"""`longretr serve`: an HTTP search server over one index folder (`longretr search --server` is its client, client.py).

The model and index are loaded once (an index whose model's adapter is gone or changed is served for lexical search
meanwhile: dense and hybrid requests get a 503 naming why). Concurrent requests are micro-batched: each request puts a
job on a queue and awaits it; one worker thread drains up to `max_batch` jobs (waiting at most
`batch_wait_ms` for company) and runs them as one `Searcher.search` call (so one encoder forward
pass) per (mode, filter, depth) group, off the event loop. Lexical requests need no encoder: each runs at once in a
thread of its own, not behind a batch. A reloader thread watches the index
manifest and swaps in a new `Searcher` when its version changes; a batch always uses one version throughout.

API (JSON in, JSON out; errors are `{"error": "..."}` with a 4xx/5xx status):
    POST /search  {"query": str, "k"?: int, "filter"?: {"path_prefix"?: str, "ids"?: [str]}, "mode"?: str}
    GET  /health  liveness: status, index version, documents
    GET  /stats   documents, model, index type, uptime, query count, latency percentiles, batching
    GET  /document?id=ID[&start=N&end=M]   a document's indexed text (or a hit's passage of it), title, path, tokens
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import socket
import sys
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from . import store
from .fusion import check_mode
from .queries import Filter, Hit, encodes
from .search import HYBRID_DEPTH, ModelMismatch, Searcher

if TYPE_CHECKING:  # it imports torch and transformers (seconds): `serve` checks its arguments and binds first
    from .embedder import Embedder


RELOAD_RETRY_S = 60.0  # how often a version that failed to load is tried again while its manifest stays the same


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 * 1024
    max_query_chars: int = 2000
    max_k: int = 100
    max_filter_ids: int = 1000
    max_queue: int = 1024  # queued queries beyond this get 503: back-pressure instead of unbounded latency
    request_timeout_s: float = 60.0


class ServeError(Exception):
    """The server cannot start (port taken, unknown host); the message names the problem."""


class BadRequest(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


@dataclass
class SearchRequest:
    query: str
    k: int = 10
    mode: str | None = None
    where: Filter | None = None


REQUEST_FIELDS = ("query", "k", "filter", "mode")
FILTER_FIELDS = ("path_prefix", "ids")


def parse_search_request(body: bytes, limits: Limits) -> SearchRequest:
    """Validate a POST /search body; every problem is a BadRequest naming the field."""
    if not body.strip():
        raise BadRequest(400, 'empty request body; send a JSON object like {"query": "...", "k": 10}')
    try:
        data = json.loads(body, parse_int=_parse_int)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, invalid UTF-8, absurd nesting
        raise BadRequest(400, f"request body is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(data, dict):
        raise BadRequest(422, f"request body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(REQUEST_FIELDS))
    if unknown:
        raise BadRequest(422, f"unknown field(s) {unknown}; expected {list(REQUEST_FIELDS)}")
    if "query" not in data:
        raise BadRequest(422, "missing field 'query'")
    query = data["query"]
    if not isinstance(query, str):
        raise BadRequest(422, f"'query' must be a string, got {type(query).__name__}")
    if not query.strip():
        raise BadRequest(422, "'query' is empty")
    if len(query) > limits.max_query_chars:
        raise BadRequest(413, f"'query' is {len(query)} characters; the limit is {limits.max_query_chars}")
    _check_encodable(query, "query")
    k = data.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int):  # bool is an int in Python; 5.0 and "5" are refused
        raise BadRequest(422, f"'k' must be an integer, got {json.dumps(k)[:50]}")
    if not 1 <= k <= limits.max_k:
        raise BadRequest(422, f"'k' must be between 1 and {limits.max_k}, got {k}")
    mode = data.get("mode")
    if mode is not None and (not isinstance(mode, str) or not mode.strip() or len(mode) > 50):
        raise BadRequest(422, f"'mode' must be a non-empty string, got {json.dumps(mode)[:50]}")
    return SearchRequest(query=query, k=k, mode=mode, where=_parse_filter(data.get("filter"), limits))


def _parse_int(digits: str) -> int:
    # Python refuses to convert integers of over 4300 digits (a ValueError, which would read as "not valid JSON")
    if len(digits.lstrip("-")) > 100:
        raise BadRequest(422, f"the body holds an integer of {len(digits.lstrip('-'))} digits; 'k' must be an "
                              "integer between 1 and the server's --max-k")
    return int(digits)


def _parse_filter(spec, limits: Limits) -> Filter | None:
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise BadRequest(422, f"'filter' must be an object with {list(FILTER_FIELDS)}, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(FILTER_FIELDS))
    if unknown:
        raise BadRequest(422, f"unknown filter key(s) {unknown}; supported: {list(FILTER_FIELDS)}")
    prefix, ids = spec.get("path_prefix"), spec.get("ids")
    if "path_prefix" in spec:
        if not isinstance(prefix, str) or not prefix or len(prefix) > 1000:
            raise BadRequest(422, "filter 'path_prefix' must be a non-empty string of at most 1000 characters")
        _check_encodable(prefix, "filter path_prefix")
    if "ids" in spec:
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise BadRequest(422, "filter 'ids' must be a non-empty list of document id strings")
        if len(ids) > limits.max_filter_ids:
            raise BadRequest(422, f"filter 'ids' has {len(ids)} ids; the limit is {limits.max_filter_ids}")
    return Filter(prefix, None if ids is None else frozenset(ids)) if spec else None


def _check_encodable(text: str, what: str) -> None:
    if not encodes(text):  # JSON may carry lone surrogates ("\ud800"); refused here, not by the tokenizer mid-batch
        raise BadRequest(422, f"{what} is not valid Unicode (it contains a lone surrogate)")


@dataclass
class _Job:
    query: str
    k: int
    mode: str | None
    where: Filter | None = None
    future: Future = field(default_factory=Future)


@dataclass
class Result:
    hits: list[Hit]
    version: int
    mode: str | None  # the mode that version searched in (a request without one: the version's default)


class SearchService:
    """One index, one loaded model, a micro-batching worker and an index reloader."""

    def __init__(
        self,
        folder: Path | str,
        embedder: Embedder | None = None,
        limits: Limits = Limits(),
        max_batch: int = 32,
        batch_wait_ms: float = 5.0,
        reload_interval: float = 2.0,
    ) -> None:
        if max_batch < 1 or batch_wait_ms < 0 or reload_interval < 0:
            raise ValueError("max_batch must be >= 1, batch_wait_ms and reload_interval >= 0")
        self.folder = Path(folder)
        self.searcher = Searcher(self.folder, embedder)
        self.embedder: Embedder | None = None  # reused by reloads: the model is loaded once
        self.model_error: str | None = None  # why it could not be: only lexical search works meanwhile
        self._load_model((FileNotFoundError, ModelMismatch))  # what Searcher raises for an adapter gone or changed
        self.limits, self.max_batch, self.batch_wait = limits, max_batch, batch_wait_ms / 1000
        self.reload_interval = reload_interval
        self.reload_error: str | None = None
        self.started = time.monotonic()
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=10_000)
        self.counts = {"queries": 0, "rejected": 0, "failed": 0, "batches": 0, "batched_queries": 0,
                       "max_batch_seen": 0, "search_calls": 0, "reloads": 0}
        self._worker = threading.Thread(target=self._work, name="longretr-batcher", daemon=True)
        self._worker.start()
        self._reloader = None
        if reload_interval > 0:
            self._reloader = threading.Thread(target=self._watch, name="longretr-reloader", daemon=True)
            self._reloader.start()

    # -- public ---------------------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self.searcher.version

    @property
    def default_mode(self) -> str | None:
        """The mode a request without one gets: the index's default, where the Searcher has modes."""
        ranking = getattr(self.searcher, "ranking", None)
        return ranking.get("mode") if isinstance(ranking, dict) else None

    @property
    def model_unavailable(self) -> str | None:
        """Why dense and hybrid requests are refused, and the way out; None while the model is loaded."""
        error = self.model_error
        return None if error is None else f'dense and hybrid search are unavailable (send "mode": "lexical"): {error}'

    @property
    def worker_alive(self) -> bool:
        return self._worker.is_alive()

    def submit(self, request: SearchRequest) -> Future:
        if self._queue.qsize() >= self.limits.max_queue:
            raise BadRequest(503, f"server busy: {self._queue.qsize()} queries queued; retry shortly", retry_after=1)
        job = _Job(request.query, request.k, request.mode, request.where)
        self._queue.put(job)
        return job.future

    async def search(self, request: SearchRequest) -> Result:
        """Ranked hits for one request (a filtered one: the best k of the documents it keeps, see Searcher.search)."""
        searcher = self.searcher  # the version that decides the mode answers it too
        mode = request.mode or searcher.ranking["mode"]
        if mode == "lexical":  # no encoder pass: not queued behind one (~0.1 ms)
            return await asyncio.wait_for(asyncio.to_thread(self._lexical, searcher, request),
                                          self.limits.request_timeout_s)
        if self.model_error is not None:  # refused at once, not failed in a batch; an unknown mode is still a 422
            check_mode(mode)
            raise BadRequest(503, self.model_unavailable)
        future = asyncio.wrap_future(self.submit(request), loop=asyncio.get_running_loop())
        return await asyncio.wait_for(future, self.limits.request_timeout_s)

    def record(self, status: int, seconds: float) -> None:
        with self._lock:
            if status < 400:
                self.counts["queries"] += 1
                self._latencies.append(seconds * 1000)
            elif status < 500:
                self.counts["rejected"] += 1
            else:
                self.counts["failed"] += 1

    def stats(self) -> dict:
        snap = self.searcher.snapshot
        with self._lock:
            lat = list(self._latencies) if self._latencies else None
            counts = dict(self.counts)
        batches = counts["batches"]
        return {
            "documents": snap.count,
            "model": snap.manifest["model"]["name"],
            "model_fingerprint": snap.manifest["model_fingerprint"],
            "index_type": snap.manifest.get("index_type", "unknown"),
            "default_mode": self.default_mode,
            "index_version": self.version,
            "index_updated": snap.manifest.get("updated"),
            "uptime_s": round(time.monotonic() - self.started, 1),
            **{k: counts[k] for k in ("queries", "rejected", "failed", "reloads", "search_calls")},
            "latency_ms": None if lat is None else {
                "window": len(lat), **{name: round(v, 2) for name, v in percentiles(lat).items()}},
            "batching": {"batches": batches, "queries": counts["batched_queries"], "max_batch": self.max_batch,
                         "max_seen": counts["max_batch_seen"],
                         "mean_size": round(counts["batched_queries"] / batches, 2) if batches else None,
                         "wait_ms": self.batch_wait * 1000},
            "queued": self._queue.qsize(),
            "reload_error": self.reload_error,
            "warnings": self.warnings(),
        }

    def _damage_stamp(self) -> tuple:
        """What the served version's damaged files look like on disk now: a change is worth reading them again."""
        files = self.searcher.snapshot.manifest["files"]
        return tuple(_stamp(self.folder / files[kind]) for kind in sorted(self.searcher.damaged))

    def warnings(self) -> list[str]:
        """What an operator should know of: the served version's damaged files, a newer version that cannot load."""
        stuck = [f"still serving version {self.version}: {self.reload_error}"]
        model = self.model_unavailable
        return self.searcher.warnings() + (stuck if self.reload_error else []) + ([model] if model else [])

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=5)
        if self._reloader is not None:
            self._reloader.join(timeout=5)

    def _load_model(self, tolerated: type[Exception] | tuple[type[Exception], ...] = Exception) -> None:
        """Load the served version's model; a tolerated error leaves the server lexical-only, saying why (the
        reloader tolerates any: it must not die of one)."""
        was = self.model_error
        try:
            self.embedder, self.model_error = self.searcher.embedder, None
        except tolerated as e:
            self.embedder, self.model_error = None, str(e)
        if was is not None and self.model_error is None:
            print(f"longretr serve: model {self.searcher.snapshot.manifest['model']['name']} loaded: dense and "
                  "hybrid search work again", file=sys.stderr, flush=True)

    # -- worker threads -------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.batch_wait
            while len(batch) < self.max_batch:
                try:  # after the deadline, still take whatever is already waiting: that costs nothing
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                                 if time.monotonic() < deadline else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._run_batch(batch)
            except BaseException as e:  # never let the worker die; fail this batch's jobs instead
                for job in batch:
                    _resolve(job.future, error=e)

    def _run_batch(self, batch: list[_Job]) -> None:
        searcher = self.searcher  # one index version for the whole batch
        version = searcher.version
        with self._lock:
            self.counts["batches"] += 1
            self.counts["batched_queries"] += len(batch)
            self.counts["max_batch_seen"] = max(self.counts["max_batch_seen"], len(batch))
        groups: dict[tuple, list[_Job]] = {}
        for job in batch:  # one encoder pass per group, whose jobs' top k are each the start of its deepest search
            mode = job.mode or searcher.ranking["mode"]
            # lexical search breaks ties by vid, so any k shares; an ANN index searches differently for each k (HNSW
            # reads max(k, efSearch) candidates), so dense jobs share only with their own k, and hybrid ones (lists
            # max(k, HYBRID_DEPTH) deep) with those of the same depth
            depth = {"lexical": 0, "hybrid": max(job.k, HYBRID_DEPTH)}.get(mode, job.k)
            groups.setdefault((mode, job.where, depth), []).append(job)
        for (mode, where, _), jobs in groups.items():
            jobs = [j for j in jobs if not j.future.cancelled()]  # their requests timed out or went away
            if not jobs:
                continue
            k = max(j.k for j in jobs)
            try:  # a filter that keeps nothing is an error (422), as in `longretr search`, not an empty answer
                if where is not None:
                    searcher.check_filter(where)
            except ValueError as e:
                for job in jobs:
                    _resolve(job.future, error=e)
                continue
            try:
                results = self._search(searcher, [j.query for j in jobs], k, mode, where)
            except Exception as e:
                if len(jobs) == 1:
                    _resolve(jobs[0].future, error=e)
                    continue
                # one bad query must not fail its neighbours: retry them one by one
                for job in jobs:
                    try:
                        hits = self._search(searcher, [job.query], job.k, mode, where)[0]
                        _resolve(job.future, Result(hits, version, mode))
                    except Exception as e1:
                        _resolve(job.future, error=e1)
                continue
            for job, hits in zip(jobs, results):
                _resolve(job.future, Result(hits[:job.k], version, mode))

    def _lexical(self, searcher: Searcher, request: SearchRequest) -> Result:
        if request.where is not None:  # one that keeps nothing is an error (422), as in a batch
            searcher.check_filter(request.where)
        hits = self._search(searcher, [request.query], request.k, "lexical", request.where)[0]
        return Result(hits, searcher.version, "lexical")

    def _search(self, searcher: Searcher, queries: list[str], k: int, mode: str | None,
                where: Filter | None) -> list[list[Hit]]:
        with self._lock:
            self.counts["search_calls"] += 1
        return searcher.search(queries, k, mode=mode, where=where)

    def _watch(self) -> None:
        # The manifest whose version could not be loaded is not loaded again (a whole index, every interval) until it
        # changes or RELOAD_RETRY_S pass: a failure that is not the index's (no file handles left, a file restored)
        # is retried now and then. The served version is read again when a lexical or ann file it could not read
        # changes (restored in place).
        failed, failed_at, stamp = None, 0.0, self._damage_stamp()
        model_tried = time.monotonic()
        while not self._stop.wait(self.reload_interval):
            if self.model_error is not None and time.monotonic() - model_tried >= RELOAD_RETRY_S:
                model_tried = time.monotonic()  # an adapter restored in place: no new version to reload
                self._load_model()
            manifest = None
            try:
                manifest = store.read_manifest(self.folder)
                if manifest is None:
                    raise store.IndexFolderError(f"{self.folder}: manifest.json is gone")
                same = manifest == self.searcher.snapshot.manifest  # not just the version: a fresh build is 1 again
                if same:
                    self.reload_error = failed = None  # e.g. the folder was moved away and back
                    if not self.searcher.damaged or self._damage_stamp() == stamp:
                        continue
                    stamp = self._damage_stamp()
                elif manifest == failed and time.monotonic() - failed_at < RELOAD_RETRY_S:
                    continue
                fresh = Searcher(self.folder, self.embedder)
                if same and len(fresh.damaged) >= len(self.searcher.damaged):
                    continue
                if "lexical" in fresh.damaged and "lexical" not in self.searcher.damaged:  # it would lose two modes
                    raise store.IndexFolderError(fresh.damaged["lexical"])
            except Exception as e:  # keep serving the version we have; say why in /stats
                failed, failed_at = manifest, time.monotonic()
                message = f"{type(e).__name__}: {e}"
                if message != self.reload_error:
                    print(f"longretr serve: cannot reload {self.folder}, still serving version {self.version}: "
                          f"{message}", file=sys.stderr, flush=True)
                self.reload_error = message
                continue
            old = self.version
            self.searcher = fresh  # an atomic reference swap: batches already running keep the old one
            stamp = self._damage_stamp()
            self.reload_error = None
            with self._lock:
                self.counts["reloads"] += 1
            print(f"longretr serve: reloaded {self.folder}: version {old} -> {self.version}, "
                  f"{fresh.snapshot.count} documents", file=sys.stderr, flush=True)
            for warning in fresh.warnings():
                print(f"longretr serve: warning: {warning}", file=sys.stderr, flush=True)
            if self.model_error is not None:  # e.g. re-indexed with --rebuild and a model that loads
                model_tried = time.monotonic()
                self._load_model()


def _stamp(path: Path) -> tuple:
    """Sizes and change times of a file, or of a folder and its files (a lexical index); () for what is not there."""
    try:
        paths = [path, *sorted(path.iterdir())] if path.is_dir() else [path]
        return tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
    except OSError:
        return ()


def _resolve(future: Future, result: Result | None = None, error: BaseException | None = None) -> None:
    """Settle a job's future unless its request already gave up on it (timeout, disconnect)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def _problem(error: dict) -> str:
    """One of FastAPI's validation errors (GET /document's parameters) in words, "'start' (query parameter): Input
    should be a valid integer ..., got '1,000'", not a dump of its dict."""
    *where, name = error.get("loc") or ("?",)
    got = f", got {str(error['input'])[:50]!r}" if error.get("input") is not None else ""
    return f"{name!r}{f' ({where[0]} parameter)' if where else ''}: {error.get('msg', 'invalid')}{got}"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"request body is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():  # chunked bodies are counted as they arrive
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body exceeds the limit of {limit} bytes")
    return bytes(body)


def create_app(service: SearchService) -> FastAPI:
    app = FastAPI(title="longretr", description="Long-document search over one index folder.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "; ".join(map(_problem, exc.errors()))[:500])

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.post("/search")
    async def search(request: Request) -> JSONResponse:
        start = time.perf_counter()
        status, payload, retry = 200, None, None
        try:
            req = parse_search_request(await _read_body(request, service.limits.max_body_bytes), service.limits)
            result = await service.search(req)
            payload = {"query": req.query, "k": req.k, "mode": result.mode,
                       "index_version": result.version,
                       "hits": [h.to_dict() for h in result.hits]}
        except ClientDisconnect:  # the client went away mid-body: nobody to answer, and no failure of ours
            return JSONResponse({"error": "client disconnected"}, status_code=400)
        except BadRequest as e:
            status, payload, retry = e.status, {"error": e.message}, e.retry_after
        except ValueError as e:  # raised by the searcher for a query or mode it refuses
            status, payload = 422, {"error": str(e)}
        except TimeoutError:
            status, payload = 504, {"error": f"search took over {service.limits.request_timeout_s:.0f}s"}
        except Exception as e:
            status, payload = 500, {"error": f"search failed: {type(e).__name__}: {e}"}
        took = time.perf_counter() - start
        service.record(status, took)
        if status == 200:
            payload["took_ms"] = round(took * 1000, 2)
        headers = {"Retry-After": str(retry)} if retry else None  # a full queue drains in about a batch's time
        return JSONResponse(payload, status_code=status, headers=headers)

    @app.api_route("/health", methods=["GET", "HEAD"])  # HEAD: what some health checkers send
    async def health() -> JSONResponse:
        ok = service.worker_alive
        return JSONResponse({"status": "ok" if ok else "worker stopped", "index_version": service.version,
                             "documents": service.searcher.snapshot.count, "warnings": service.warnings()},
                            status_code=200 if ok else 503)

    @app.get("/stats")
    async def stats() -> JSONResponse:
        return JSONResponse(service.stats())

    @app.get("/document")
    async def document(id: str, start: int | None = None, end: int | None = None) -> JSONResponse:  # noqa: A002
        searcher = service.searcher  # one index version for the text and the version it reports
        try:  # off the event loop: a miss looks for ids like it among all of them
            doc = await asyncio.to_thread(searcher.document, id, start, end)
        except store.NoDocument as e:
            return _error(404, str(e))
        except ValueError as e:
            return _error(422, str(e))
        return JSONResponse({**doc, "index_version": searcher.version})

    return app


def serve(
    folder: Path | str,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = False,
    threads: int = 0,
    **service_options,
) -> None:
    """Load the index and its model once, then serve until interrupted (lexical search only, saying why, when the
    model's adapter is gone or changed: SearchService)."""
    sockets = bind(host, port)  # before torch and the model load: a taken port fails at once, not after seconds
    try:
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        service = SearchService(folder, **service_options)
        try:
            _run(service, sockets, host, port, access_log)
        finally:
            service.close()
    finally:
        _close(sockets)


def _run(service: SearchService, sockets: list[socket.socket], host: str, port: int, access_log: bool) -> None:
    import torch
    import uvicorn

    stats = service.stats()
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"longretr serve: warning: binding {host}: the API has no authentication", file=sys.stderr)
    print(f"longretr serve: {service.folder} (version {stats['index_version']}, {stats['documents']} documents, "
          f"model {stats['model']}, {torch.get_num_threads()} torch threads) on "
          f"http://{f'[{host}]' if ':' in host else host}:{port}", file=sys.stderr, flush=True)
    for warning in stats["warnings"]:
        print(f"longretr serve: warning: {warning}", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(service), log_level="warning", access_log=access_log,
                            limit_concurrency=service.limits.max_queue + 64, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=sockets)


def bind(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address of host, as asyncio's create_server binds them;
    a port in use or an unknown host is a ServeError."""
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio does: "::" and "0.0.0.0" are separate sockets
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as e:
        _close(sockets)
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sockets


def _close(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


# -- client --------------------------------------------------------------------------------------


def percentiles(values) -> dict:
    """p50/p95/p99/max of a list of latencies (the benchmark and /stats report the same ones)."""
    if not values:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan, "max": math.nan}
    a = np.asarray(values)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}
