"""The client side of `longretr serve`: `longretr search --server URL` sends its queries here. It imports no model,
torch or faiss, so a search against a running server takes about as long as the server's answer."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, fields

import httpx

from .queries import Filter, Hit, check_k, check_texts


class RemoteError(Exception):
    """The server could not be reached or refused the request; the message says which and why. `refused`: the server
    answered a 4xx (the request's fault); `query`: the position of the query it refused."""

    query: int | None = None
    refused: bool = False


def search_remote(url: str, queries: list[str], k: int = 10, mode: str | None = None, where: Filter | None = None,
                  timeout: float = 120.0, workers: int = 8) -> list[list[Hit]]:
    """Hits for each query from a running `longretr serve` (concurrent requests, so they batch). Queries, k and the
    filter are checked as Searcher.search checks them, before anything is sent."""
    queries, k = check_texts(queries, "queries"), check_k(k)
    if where is not None and not isinstance(where, Filter):
        raise TypeError(f"where must be a longretr.queries.Filter, got {type(where).__name__}")
    if where is not None:  # httpx fails deep inside on a lone surrogate (a command line's undecodable bytes)
        check_texts([where.path_prefix or "", *sorted(where.ids or ())], "filter path_prefix and ids")
    base = url.rstrip("/")
    options = {**({"mode": mode} if mode is not None else {}), **({"filter": where.to_dict()} if where else {})}

    def one(client: httpx.Client, n: int, query: str) -> list[Hit]:
        try:
            data = _answer(lambda: client.post(f"{base}/search", json={"query": query, "k": k, **options}), url,
                           "/search")
        except RemoteError as e:
            if e.refused:  # a 4xx is this query's; an unreachable server or a 5xx is no query's fault
                e.query = n
            raise
        return _hits(data, f"{base}/search")

    with httpx.Client(timeout=timeout) as client, ThreadPoolExecutor(max(1, min(workers, len(queries)))) as pool:
        return list(pool.map(lambda nq: one(client, *nq), enumerate(queries)))


def document_remote(url: str, doc_id: str, start: int | None = None, end: int | None = None,
                    timeout: float = 60.0) -> dict:
    """A document's indexed text (or characters [start, end) of it) from a running `longretr serve`."""
    base = url.rstrip("/")
    params = {"id": doc_id} | {name: v for name, v in (("start", start), ("end", end)) if v is not None}
    data = _answer(lambda: httpx.get(f"{base}/document", params=params, timeout=timeout), url, "/document")
    if not isinstance(data, dict) or not {"id", "text", "start", "end", "length"} <= set(data):
        raise RemoteError(f"{base}/document answered 200, but not as `longretr serve` does: {json.dumps(data)[:200]}")
    return data


def _answer(send, url: str, endpoint: str):
    """The JSON of a 200 answer to send(); anything else (no server, an error status, not JSON) is a RemoteError."""
    base = url.rstrip("/")
    try:
        r = send()
    except httpx.InvalidURL as e:  # not an httpx.HTTPError
        raise RemoteError(f"{url}: not a valid server URL ({e})") from e
    except httpx.HTTPError as e:
        raise RemoteError(f"cannot reach the server at {base}: {e}") from e
    try:
        data = r.json()
    except ValueError:
        raise RemoteError(f"{base}{endpoint} answered {r.status_code} with a non-JSON body: {r.text[:200]}") from None
    if r.status_code != 200:
        detail = data.get("error", data) if isinstance(data, dict) else data
        error = RemoteError(f"{base}{endpoint} answered {r.status_code}: {str(detail)[:500]}")
        error.refused = 400 <= r.status_code < 500  # this request's fault (a query too long, a bad k), not the server's
        raise error
    return data


def _hits(data, where: str) -> list[Hit]:
    """The hits of a /search answer; anything else (another service on that port) is a RemoteError."""
    names = {f.name for f in fields(Hit)}
    required = {f.name for f in fields(Hit) if f.default is MISSING}
    hits = data.get("hits") if isinstance(data, dict) else None
    if not isinstance(hits, list) or not all(isinstance(h, dict) and required <= set(h) for h in hits):
        raise RemoteError(f"{where} answered 200, but not as `longretr serve` does (no list of hits): "
                          f"{json.dumps(data)[:200]}")
    return [Hit(**{n: h[n] for n in names if n in h}) for h in hits]  # an older server: no passage
