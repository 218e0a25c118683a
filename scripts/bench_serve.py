"""`make bench-serve`: a bounded load test of `longretr serve` on loopback with the real default model.

Builds (or reuses) a small index: the first --docs demo-corpus pages, each cut to its first --max-tokens
tokens, with a copy of configs/default.toml. Starts the server in a subprocess on a free loopback port, then runs
two phases: one client sending --single requests one at a time (the latency of a lone query), and
--clients concurrent clients sending --requests requests in all (throughput and latency under load,
where micro-batching matters). Reports throughput, p50/p95/p99 latency and errors with the machine,
and writes JSON + a PNG of the latency distributions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
from tqdm.auto import tqdm

from longretr.config import load_config
from longretr.machine import describe
from longretr.server import percentiles

ROOT = Path(__file__).resolve().parent.parent

QUERIES = [
    "parse command line arguments", "compute a SHA-256 digest of a file", "read and write ZIP archives",
    "schedule work on a pool of threads", "format dates and times", "match text with regular expressions",
    "serialize objects to JSON", "compress data with gzip", "run a subprocess and capture its output",
    "walk a directory tree", "send an HTTP request", "parse an XML document", "read a CSV file",
    "generate random numbers", "measure execution time of small code snippets", "copy files and folders",
    "decimal fixed point arithmetic", "asynchronous IO event loop", "encode binary data as base64",
    "log messages to a file", "temporary files and directories", "abstract base classes",
    "iterate over combinations and permutations", "read configuration files", "unit testing framework",
]


def bench_config(out: Path, max_tokens: int) -> Path:
    base = load_config(ROOT / "configs" / "default.toml")
    path = out / f"model-{max_tokens}.toml"
    path.write_text(replace(base, name=f"{base.name}-{max_tokens}", max_tokens=max_tokens).to_toml())
    return path


def build_index(out: Path, docs: int, max_tokens: int, threads: int) -> Path:
    import torch

    from longretr.democorpus import build
    from longretr.embedder import Embedder
    from longretr.indexer import index_corpus

    corpus, index = out / "corpus", out / "index"
    if threads:
        torch.set_num_threads(threads)
    embedder = Embedder(str(bench_config(out, max_tokens)))
    if len(list(corpus.glob("*.txt"))) != docs:
        print(f"writing {docs} demo documents to {corpus}, each cut to {max_tokens} tokens", flush=True)
        build(corpus, docs)
        for page in corpus.glob("*.txt"):  # else a longer page is encoded whole, in windows of max_tokens
            text = page.read_text()
            offsets = embedder.tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
            page.write_text(text[: offsets[min(max_tokens, len(offsets)) - 1][1]])
    summary = index_corpus(corpus, index, embedder)  # incremental: a second run reuses the index
    print(f"{index}: {summary.line()}", flush=True)
    return index


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: Path, port: int, args, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "longretr.cli", "serve", "--index", str(index), "--port", str(port),
           "--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms),
           "--threads", str(args.threads), "--reload-interval", "0"]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    raise SystemExit(f"server did not answer /health within 600s:\n{log.read_text()}")


async def load(url: str, clients: int, requests: int, k: int, expect: int, desc: str) -> dict:
    """`clients` workers share a counter of `requests`; a request counts as ok with 200 and `expect` hits."""
    latencies, errors, next_i = [], {}, iter(range(requests))
    bar = tqdm(total=requests, desc=desc, unit="req")
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        for i in next_i:
            t0 = time.perf_counter()
            try:
                r = await http.post(f"{url}/search", json={"query": QUERIES[i % len(QUERIES)], "k": k})
                ok = r.status_code == 200 and len(r.json()["hits"]) == expect
                key = None if ok else f"HTTP {r.status_code}: {r.text[:100]}"
            except (httpx.HTTPError, ValueError, KeyError) as e:
                key = f"{type(e).__name__}: {e}"
            if key is None:
                latencies.append((time.perf_counter() - t0) * 1000)
            else:
                errors[key] = errors.get(key, 0) + 1
            bar.update()

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    seconds = time.perf_counter() - start
    bar.close()
    return {"clients": clients, "requests": requests, "ok": len(latencies), "errors": sum(errors.values()),
            "error_kinds": errors, "seconds": round(seconds, 2), "throughput_qps": round(len(latencies) / seconds, 2),
            "latency_ms": {name: round(v, 1) for name, v in percentiles(latencies).items()},
            "latencies_ms": [round(x, 2) for x in latencies]}


def plot(phases: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4))
    for ax, (name, p) in zip(axes, phases.items()):
        ax.hist(p["latencies_ms"], bins=40, color="tab:blue")
        for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
            ax.axvline(p["latency_ms"][q], color="black", linestyle=style, label=f"{q} {p['latency_ms'][q]:.0f} ms")
        ax.set_title(f"{name}: {p['clients']} client(s), {p['throughput_qps']:.1f} q/s, {p['errors']} errors")
        ax.set_xlabel("request latency (ms)")
        ax.set_ylabel("requests")
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--single", type=int, default=50, help="requests of the one-client phase")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for indexing and the server (0: default)")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench_serve")
    args = ap.parse_args()
    if min(args.docs, args.clients, args.requests, args.single, args.k) < 1:
        ap.error("--docs, --clients, --requests, --single and -k must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    info = describe()
    print("machine:", json.dumps(info), flush=True)

    index = build_index(args.out, args.docs, args.max_tokens, args.threads)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(index, port, args, args.out / "server.log")
    try:
        expect = min(args.k, httpx.get(f"{url}/health", timeout=30).json()["documents"])
        for q in QUERIES[:5]:  # warm-up, not measured
            httpx.post(f"{url}/search", json={"query": q, "k": args.k}, timeout=300).raise_for_status()
        phases = {}
        for name, clients, requests in (("one client", 1, args.single), ("concurrent", args.clients, args.requests)):
            before = httpx.get(f"{url}/stats", timeout=30).json()["batching"]
            phases[name] = asyncio.run(load(url, clients, requests, args.k, expect, f"{clients} client(s)"))
            after = httpx.get(f"{url}/stats", timeout=30).json()["batching"]
            batches, queries = after["batches"] - before["batches"], after["queries"] - before["queries"]
            phases[name]["batches"] = batches
            phases[name]["mean_batch"] = round(queries / batches, 2) if batches else None
        stats = httpx.get(f"{url}/stats", timeout=30).json()
        alive = httpx.get(f"{url}/health", timeout=30).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=60)
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {"machine": info, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "index": {"documents": stats["documents"], "model": stats["model"], "type": stats["index_type"]},
              "phases": phases, "server_stats": stats, "server_alive_after": alive}
    (args.out / "bench_serve.json").write_text(json.dumps(result, indent=2))
    title = (f"longretr serve, {stats['model']}, {stats['documents']} docs, k={args.k}, max batch {args.max_batch}, "
             f"{info['cpu']} x{info['cores']}, torch threads {args.threads or 'default'}")
    plot(phases, args.out / "bench_serve.png", title)

    print(f"\nmachine: {info['cpu']}, {info['cores']} cores, load average {info['load_average']} at start")
    print(f"index: {stats['documents']} documents, model {stats['model']}, {stats['index_type']}")
    for name, p in phases.items():
        lat = p["latency_ms"]
        print(f"{name:>11}: {p['requests']} requests, {p['clients']} clients: {p['throughput_qps']:.1f} q/s, "
              f"p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, p99 {lat['p99']:.0f} ms, errors {p['errors']}, "
              f"{p['batches']} batches (mean {p['mean_batch']})")
        for kind, n in p["error_kinds"].items():
            print(f"{'':>13}{n} x {kind}")
    print(f"server: {stats['queries']} queries, {stats['rejected']} rejected, {stats['failed']} failed; "
          f"alive after the run: {alive}")
    print(f"wrote {args.out / 'bench_serve.json'} and {args.out / 'bench_serve.png'}")
    if any(p["errors"] for p in phases.values()) or not alive:
        sys.exit(1)


if __name__ == "__main__":
    main()
