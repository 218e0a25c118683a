"""The `longretr` command line: one verb per job."""

from __future__ import annotations

import json
import math
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Long-document search with bidirectional LM embeddings (whole documents, up to 32k tokens).")

INDEX_OPT = typer.Option(Path("indexes/default"), "--index", "-i", help="Index folder.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, a job scheduler) raised where Ctrl-C would be, so that a run stops the same clean way."""


def _terminated(signum, frame) -> None:
    raise _Terminated()


@contextmanager
def _on_sigterm(handler) -> Iterator[None]:
    """SIGTERM (kill, a job scheduler) handled by `handler` meanwhile, so that a run stops the way Ctrl-C stops it."""
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set a handler
    previous = signal.signal(signal.SIGTERM, handler) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


@app.command()
def index(
    corpus: Path = typer.Argument(..., help="Folder (or file) of documents: .txt/.md/.rst (and other plain text), "
                                ".html, .pdf, .jsonl/.parquet rows."),
    index: Path = INDEX_OPT,
    model: str = typer.Option(None, "--model", "-m", help="Model config name or .toml path. Default: the index's own "
                              "model (the one it was built with), or `default` for a new index."),
    rebuild: bool = typer.Option(False, help="Re-encode everything instead of updating incrementally."),
    dtype: str = typer.Option(None, help="Override the config's dtype (auto, float32, bfloat16, float16)."),
    index_type: str = typer.Option(None, "--index-type", help="flat | ivf | hnsw | ivfpq | a faiss factory string "
                                   "(e.g. IVF256,SQ8); sized automatically. Default: keep the index's (new: flat)."),
    mode: str = typer.Option(None, help="Default search mode stored in the index: dense | lexical | hybrid."),
    fusion: str = typer.Option(None, help="Hybrid fusion stored in the index: rrf | convex."),
    weight: float = typer.Option(None, help="Hybrid fusion: the dense list's weight in [0, 1]."),
    rrf_k: float = typer.Option(None, "--rrf-k", help="Hybrid fusion: the k in 1 / (k + rank) (default 60)."),
    shard_tokens: int = typer.Option(32768, help="Checkpoint encoded vectors every this many tokens."),
) -> None:
    """Encode every document under CORPUS into an index folder (new and changed ones only)."""
    from .corpus import check_root
    from .fusion import ranking_config
    from .indexer import LazyEmbedder, index_corpus, pending_documents
    from .store import IndexFolderError

    try:
        check_root(corpus)  # before the model loads
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    ranking = {"mode": mode, "fusion": fusion, "weight": weight, "rrf_k": rrf_k}
    try:
        ranking_config(**ranking)  # bad settings fail before the model loads (the index type needs its dim)
    except ValueError as e:
        _fail(str(e))
    config = model or _built_with(index)
    missing = [] if model else [a for a in getattr(config, "adapters", ()) if not Path(a).is_dir()]
    if missing:  # else the config's own error, which does not say that --model picks another model
        _fail(f"{index} was built with model {config.name!r}, whose adapter folder {missing[0]} is not here: restore "
              "it, or re-encode the index with another model (--model NAME --rebuild)")
    try:  # the model loads only if something is to be encoded
        with _on_sigterm(_terminated):
            summary = index_corpus(corpus, index, LazyEmbedder(config, dtype=dtype), rebuild=rebuild,
                                   shard_tokens=shard_tokens, index_type=index_type, ranking=ranking)
    except (IndexFolderError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    except KeyboardInterrupt as e:
        saved = pending_documents(index)
        kept = f"the vectors of {saved} encoded document{'s' * (saved != 1)} are saved in {index}/pending/ and " \
            "reused by the next run" if saved else "nothing was encoded yet"
        state = "keeps its last committed version" if (index / "manifest.json").is_file() else "was not written yet"
        how = "stopped by SIGTERM" if isinstance(e, _Terminated) else "interrupted"
        typer.echo(f"\nlongretr: {how}; the index {state}; {kept}: run the same `longretr index` again to go on",
                   err=True)
        raise typer.Exit(128 + signal.SIGTERM if isinstance(e, _Terminated) else 130) from None
    typer.echo(f"{index}: {summary.line()}")


def _built_with(index: Path):
    """The model config an existing index was built with (its manifest holds all of it), so that updating an index
    needs no --model; for a first run that was interrupted, its pending shards' model; else `default` (a new index,
    or one whose manifest cannot be read: --rebuild starts it over)."""
    from .indexer import pending_model
    from .search import manifest_model
    from .store import IndexFolderError, read_manifest

    try:
        manifest = read_manifest(index)
        model = pending_model(index) if manifest is None else manifest.get("model")
        return "default" if model is None else manifest_model(index, {"model": model})
    except (IndexFolderError, TypeError, ValueError):
        return "default"


@app.command()
def rm(
    ids: list[str] = typer.Argument(..., help="Ids of the documents to remove (as in search results)."),
    index: Path = INDEX_OPT,
) -> None:
    """Remove documents from an index by id (all or none; a later `index` run re-adds files still on disk)."""
    from .indexer import remove_documents
    from .store import IndexFolderError

    try:
        manifest = remove_documents(index, ids)
    except (IndexFolderError, ValueError) as e:
        _fail(str(e))
    typer.echo(f"{index}: removed {_count(manifest['removed'], 'document')}, {manifest['count']} left "
               f"(version {manifest['version']})")


@app.command()
def search(
    query: list[str] = typer.Argument(None, help="The query text; several are searched in turn, with one model "
                                      "load."),
    index: Path = INDEX_OPT,
    k: int = typer.Option(10, "-k", help="Number of results."),
    model: str = typer.Option(None, "--model", "-m", help="Model config; default: the one the index was built with."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    queries: Path = typer.Option(None, help="Batch mode: JSONL (id, text) or TSV (id<TAB>text) of queries."),
    output: Path = typer.Option(None, help="Batch mode output: .trec run file, or .jsonl."),
    mode: str = typer.Option(None, help="dense | lexical | hybrid; default: the index's (see `index --mode`)."),
    server: str = typer.Option(None, "--server", help="URL of a running `longretr serve` to query instead of "
                               "loading the model here (e.g. http://127.0.0.1:8000); --index is then unused."),
    path_prefix: str = typer.Option(None, "--path-prefix", help="Only documents whose path starts with this "
                                    "(e.g. library/), searched exactly."),
    ids: list[str] = typer.Option(None, "--id", help="Only this document id (repeatable; with --path-prefix: "
                                  "both must hold)."),
) -> None:
    """Search an index: one QUERY or several, or a batch with --queries."""
    from .queries import Filter, read_queries

    if bool(query) == (queries is not None):
        _fail("give either a QUERY or --queries FILE")
    blank = next((n for n, q in enumerate(query or [], 1) if not q.strip()), None)
    if blank is not None:
        _fail("the query is empty" if len(query) == 1
              else f"one of the queries is empty: query {blank} of {len(query)}")
    if k < 1:
        _fail("-k must be at least 1")
    if server is not None and not server.strip():  # e.g. an unset $URL: do not search (and load a model) here
        _fail("--server is empty; give the URL of a running `longretr serve`")
    if server and model:
        _fail("--model cannot be used with --server: the server searches with its index's model")
    if path_prefix == "" or "" in (ids or []):
        _fail("--path-prefix and --id cannot be empty")
    where = Filter(path_prefix, frozenset(ids) if ids else None) if path_prefix or ids else None
    if mode is not None and mode not in ("dense", "lexical", "hybrid"):
        _fail(f"--mode must be dense, lexical or hybrid, got {mode!r}")
    if output is not None and queries is None:  # a single query's hits go to the terminal; don't drop the flag
        _fail("--output is for batch mode: give --queries FILE")
    if output is not None and (output.is_dir() or not output.parent.is_dir()):  # before a long batch, not after
        _fail(f"{output}: cannot write there ({'a folder' if output.is_dir() else 'no such folder'})")
    try:
        batch = read_queries(queries) if queries else [(str(n), q) for n, q in enumerate(query, 1)]
    except ValueError as e:
        _fail(str(e))
    texts = [text for _, text in batch]
    # Imports as late as they can be: the client needs no torch or faiss, lexical search no model (seconds each).
    if server:
        from .client import RemoteError, search_remote

        try:
            results = search_remote(server, texts, k, mode=mode, where=where)
        except RemoteError as e:
            which = f"query {batch[e.query][0]!r}: " if e.query is not None and len(batch) > 1 else ""
            _fail(f"{which}{e}")
        except ValueError as e:  # checked before sending: a query or filter that is not valid Unicode
            _fail(str(e))
    else:
        from .search import ModelMismatch, Searcher
        from .store import IndexFolderError

        try:
            if model:
                from .embedder import Embedder

                searcher = Searcher(index, Embedder(model))
            else:  # the index's own model, loaded at the first dense or hybrid search
                searcher = Searcher(index)
            if where is not None:  # before a model loads
                unknown = searcher.check_filter(where, "--path-prefix/--id")
                if unknown:  # one mistyped id among several would otherwise go unnoticed
                    typer.echo(f"longretr: warning: {index} has no document {', '.join(map(repr, unknown[:5]))}"
                               f"{' ...' if len(unknown) > 5 else ''}; searching the others", err=True)
            results = searcher.search(texts, k, mode=mode, where=where)
        except (IndexFolderError, ModelMismatch, FileNotFoundError, ValueError) as e:
            _fail(str(e))
        for warning in searcher.warnings():
            typer.echo(f"longretr: warning: {warning}", err=True)
    if queries:
        _write_batch(batch, results, output, mode)
    elif as_json:  # one query: its list of hits; several: one {"query", "hits"} per query
        rows = [[h.to_dict() for h in hits] for hits in results]
        typer.echo(json.dumps(rows[0] if len(query) == 1 else [{"query": q, "hits": r} for q, r in zip(query, rows)],
                              indent=2))
    else:
        _print_hits(query, results)


def _write_batch(batch: list[tuple[str, str]], results: list, output: Path | None, mode: str | None) -> None:
    """--queries results: a TREC run (output *.trec) or JSONL rows, to the output file or stdout."""
    from .queries import trec_lines

    lines = []
    for (qid, text), hits in zip(batch, results):
        if output is not None and output.suffix.lower() == ".trec":
            lines += trec_lines(qid, hits, f"longretr-{mode}" if mode else "longretr")
        else:
            lines.append(json.dumps({"id": qid, "query": text, "hits": [h.to_dict() for h in hits]}))
    body = "\n".join(lines) + "\n"
    if output is None:
        sys.stdout.write(body)
        return
    from .atomic import atomic_write_bytes

    try:  # whole or not at all: a full disk must not leave half a run file that looks like a result
        atomic_write_bytes(output, body.encode())
    except OSError as e:
        _fail(f"{output}: cannot write ({e.strerror or e})")
    typer.echo(f"wrote the results of {_count(len(batch), 'query', 'queries')} to {output}", err=True)


def _print_hits(queries: list[str], results: list) -> None:
    """Hits for the terminal: rank, score, title, path with the passage's characters, snippet; a header per query
    when there are several."""
    for n, (text, hits) in enumerate(zip(queries, results)):
        if len(queries) > 1:
            typer.echo(("\n" if n else "") + f"== {text}")  # a blank line between queries
        if not hits:
            typer.echo("no results", err=True)
        for h in hits:
            typer.secho(f"{h.rank:>3}  {h.score:.4f}  {h.title}", bold=True)
            at = f"  (passage: characters {h.passage[0]:,}-{h.passage[1]:,})" if h.passage else ""
            typer.echo(f"     {h.path}{at}")
            typer.echo(f"     {h.snippet}")


@app.command()
def show(
    doc_id: str = typer.Argument(..., metavar="ID", help="A document id, as `longretr search` prints it."),
    index: Path = INDEX_OPT,
    chars: str = typer.Option(None, "--chars", help="START-END: only these characters of its indexed text, e.g. a "
                              "hit's passage as search prints it (15,544-16,573)."),
    as_json: bool = typer.Option(False, "--json", help="Print the document (or part) as JSON."),
    server: str = typer.Option(None, "--server", help="URL of a running `longretr serve` to ask instead; --index "
                               "is then unused."),
) -> None:
    """Print a document's indexed text, or a part of it: what search, snippets and passages refer to (for HTML and PDF
    the extracted text, not the file)."""
    if server is not None and not server.strip():
        _fail("--server is empty; give the URL of a running `longretr serve`")
    start, end = (None, None) if chars is None else _char_range(chars)
    if server:
        from .client import RemoteError, document_remote

        try:
            doc = document_remote(server, doc_id, start, end)
        except RemoteError as e:
            _fail(str(e))
    else:
        from .store import IndexFolderError, NoDocument, read_document

        try:
            doc = read_document(index, doc_id, start, end)
        except (IndexFolderError, NoDocument, ValueError) as e:
            _fail(str(e))
    if as_json:
        typer.echo(json.dumps({k: v for k, v in doc.items() if k != "index_version"}, indent=2, ensure_ascii=False))
        return
    part = f"characters {doc['start']:,}-{doc['end']:,} of {doc['length']:,}"
    typer.secho(f"{doc['title']}  ({doc['path']}, {doc['n_tokens']:,} tokens{', truncated' if doc['truncated'] else ''}"
                f"; {part})", bold=True, err=True)  # stderr: the text alone goes to a pipe or file
    typer.echo(doc["text"])


@app.command()
def info(
    index: Path = INDEX_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print it as JSON."),
) -> None:
    """What an index holds: documents, tokens, model, search settings, size, and an interrupted run's shards. Reads the
    manifest and the docs table only, not the vectors."""
    from .store import IndexFolderError, describe

    try:
        d = describe(index)
    except IndexFolderError as e:
        _fail(str(e))
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    vectors = "; vectors not recorded (an index from before passages)" if d["other_vectors"] is None else \
        f"; {d['documents'] + d['other_vectors']:,} vectors ({d['other_vectors']:,} of leads, spans and windows)"
    r = d["ranking"]
    fusion = "" if r["mode"] != "hybrid" else f" ({r['fusion']} fusion, dense weight {r['weight']}" + \
        (f", k {r['rrf_k']})" if r["fusion"] == "rrf" else ")")
    limit = f" {d['max_tokens']:,}" if isinstance(d["max_tokens"], int) else " one pass"
    cut = f"; {d['truncated']:,} cut at{limit} by an older longretr (`longretr index` encodes them whole)" \
        if d["truncated"] else ""
    lines = [
        f"{d['folder']}: {d['documents']:,} documents, {d['tokens']:,} tokens (longest {d['longest']:,}; "
        f"{d['windowed'] or 0:,} longer than{limit}, in windows{cut}){vectors}",
        f"model: {_known(d['model'])} (fingerprint {_known(d['model_fingerprint'])}), {_known(d['dim'])} dimensions",
        f"search: {r['mode']} by default{fusion}; {_known(d['index_type'])}",
        f"version {_known(d['version'])}, created {_known(d['created'])}, updated {_known(d['updated'])}; "
        f"{_size_text(d['bytes'])}",
    ]
    if d["pending_shards"]:  # the writer lock is not probed: that could fail a writer starting at the same moment
        lines.append(f"pending: {d['pending_shards']} shards of vectors not committed yet, from a run that was "
                     "interrupted or is still going; `longretr index` on the same corpus and model uses them")
    typer.echo("\n".join(lines))


def _known(value) -> str:
    """A manifest value for `info`; one a hand-edited manifest lacks as "?", not "None"."""
    return "?" if value is None else str(value)


def _size_text(n: float) -> str:
    """Bytes as `info` shows them: 7,540 bytes, 12.3 KiB, 1.5 GiB (a small index is not "0.0 MiB")."""
    if n < 1024:
        return f"{n:,} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:,.1f} {unit}"
    return f"{n / 1024:,.1f} TiB"


# a character offset as search prints it (15,544: commas between groups of three digits) or plain (15544)
OFFSET = r"([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)"


def _char_range(chars: str) -> tuple[int, int]:
    """--chars START-END as two ints; anything else (a stray comma, a lone number) is one error line."""
    m = re.fullmatch(rf"\s*{OFFSET}\s*[-:]\s*{OFFSET}\s*", chars)
    if not m:
        _fail(f"--chars {chars!r}: expected START-END, e.g. 15544-16573 or 15,544-16,573")
    return int(m[1].replace(",", "")), int(m[2].replace(",", ""))


@app.command()
def serve(
    index: Path = INDEX_OPT,
    host: str = typer.Option("127.0.0.1", help="Interface to bind; anything but loopback exposes the index "
                             "without authentication."),
    port: int = typer.Option(8000, help="TCP port."),
    max_batch: int = typer.Option(32, help="Most queries encoded together in one forward pass."),
    batch_wait_ms: float = typer.Option(5.0, help="How long a lone query waits for others to batch with."),
    max_k: int = typer.Option(100, help="Largest k a request may ask for."),
    reload_interval: float = typer.Option(2.0, help="Seconds between checks for a new index version (0: never)."),
    access_log: bool = typer.Option(False, help="Log every request."),
    threads: int = typer.Option(0, help="Torch CPU threads for encoding (0: torch's default); 1 is much faster "
                                "when another process keeps a core busy."),
) -> None:
    """Serve an index over HTTP: POST /search, GET /document, /health, /stats (see README, Server)."""
    from .search import ModelMismatch
    from .server import Limits, ServeError
    from .server import serve as run_server
    from .store import IndexFolderError

    if not 0 < port < 65536:
        _fail(f"--port must be between 1 and 65535, got {port}")
    if max_k < 1 or max_batch < 1 or threads < 0 or not all(
            0 <= x < math.inf for x in (batch_wait_ms, reload_interval)):  # nan fails too
        _fail("--max-k and --max-batch must be >= 1, --threads >= 0, --batch-wait-ms and --reload-interval "
              "finite and >= 0")
    try:
        run_server(index, host=host, port=port, access_log=access_log, threads=threads, limits=Limits(max_k=max_k),
                   max_batch=max_batch, batch_wait_ms=batch_wait_ms, reload_interval=reload_interval)
    except (IndexFolderError, ModelMismatch, ServeError, FileNotFoundError, ValueError) as e:
        _fail(str(e))


@app.command()
def models(
    configs: list[Path] = typer.Option(None, "--configs", help="Folder of model configs (repeatable; default: "
                                       "./configs and the repository's configs/)."),
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List the model configs: backbone, parameters, max tokens, attention, pooling, and whether the weights are here.

    Parameters are counted from the checkpoint's config.json (local folder or HF cache) without reading weights."""
    from .catalog import describe, format_table, mark_shadowed
    from .config import config_files

    for folder in configs or []:
        if not folder.is_dir():
            _fail(f"{folder}: {'not a folder' if folder.exists() else 'no such folder'}")
    entries = [describe(path) for path in config_files(configs or None)]
    if not entries:
        _fail("no model configs (*.toml) found")
    if not configs:  # ./configs/NAME.toml hides the repository's, a file's name a declared one: say what loads
        mark_shadowed(entries)
    typer.echo(json.dumps([e.to_dict() for e in entries], indent=2) if as_json else format_table(entries))


@app.command(name="eval")
def eval_longembed(
    model: list[str] = typer.Option(None, "--model", "-m", help="longretr model config (name or .toml); repeat "
                                    "for several. Default: default and gemma3-270m-causal (the causal baseline)."),
    baseline: list[str] = typer.Option(None, "--baseline", "-b", help="Baselines to run: bm25, minilm (default: "
                                       "both)."),
    no_baselines: bool = typer.Option(False, "--no-baselines", help="Run only the --model configs."),
    data: str = typer.Option(None, "--data", help="Published LongEmbed copy: a local folder in its layout, or the "
                             "hub id dwzhu/LongEmbed (needs network). Without it passkey and needle are regenerated."),
    tasks: str = typer.Option(None, help="Comma list of passkey, needle, narrativeqa, qmsum, summ_screen_fd, "
                              "2wikimqa (or all, synthetic, real). Default: all with --data, else synthetic."),
    full: bool = typer.Option(False, "--full", help="Everything as published: lengths 256-32768, 100 "
                              "candidates and 50 queries per length, whole real tasks. Hours on a CPU; its cost "
                              "is printed first."),
    lengths: str = typer.Option(None, help="Comma list of context lengths (overrides the profile)."),
    candidates: int = typer.Option(None, help="Candidate documents per length of passkey and needle (overrides "
                                   "the profile; a real task keeps its whole corpus)."),
    queries: int = typer.Option(None, help="Queries per length (overrides the profile)."),
    seed: int = typer.Option(0, help="Seed for the regenerated sets and for subsampling."),
    filler: Path = typer.Option(None, help="Prose file for the needle haystack (default: the Jargon File from the "
                                "Debian package jargon-text)."),
    out: Path = typer.Option(Path("results/longembed"), help="Results folder; each run gets a subfolder."),
    run: str = typer.Option(None, help="Run name (default: date-time and profile)."),
    dtype: str = typer.Option(None, help="Override the longretr configs' dtype (auto, float32, bfloat16, float16)."),
    minilm_chunk: int = typer.Option(256, help="Chunk size in word pieces for the MiniLM baseline (its window is "
                                     "256)."),
) -> None:
    """LongEmbed-style evaluation of longretr models beside BM25 and chunked MiniLM (JSON, table, plot, TREC).

    Each model is reported in dense mode and in hybrid mode (its ranking fused with BM25's, as `longretr search
    --mode hybrid` does); the bm25 baseline is the lexical mode."""
    from .evaluate.data import DataError, parse_lengths, parse_tasks
    from .evaluate.runner import DEFAULT_MODELS, PROFILES, Settings, evaluate
    from .evaluate.synth import FillerError

    def _stopped(signum, frame) -> None:
        typer.secho("error: stopped by SIGTERM; the unfinished run was removed", fg=typer.colors.RED, err=True)
        raise SystemExit(128 + signum)

    profile = "full" if full else "quick"
    if no_baselines and baseline:
        _fail(f"--no-baselines and --baseline {', '.join(baseline)} contradict each other: give one of them")
    try:
        picked = parse_tasks(tasks, has_data=data is not None)
        if filler is not None and (data is not None or "needle" not in picked):  # it would be ignored
            raise ValueError(f"--filler {filler}: only the regenerated needle task uses it, and this run has "
                             + ("published data (--data)" if data is not None else "no needle task"))
        chosen = PROFILES[profile]
        settings = Settings(
            profile=profile, models=list(model) if model else list(DEFAULT_MODELS),
            baselines=[] if no_baselines else list(baseline) if baseline else ["bm25", "minilm"],
            tasks=picked, seed=seed, data=data, filler=str(filler) if filler else None, dtype=dtype,
            minilm_chunk=minilm_chunk, out=str(out), run=run,
            # `is not None`: an empty --lengths ran the whole profile instead of being refused
            lengths=parse_lengths(lengths) if lengths is not None else chosen["lengths"],
            # --full with published data: every candidate and query as published; a given 0 stays 0 (and is refused)
            candidates=candidates if candidates is not None else None if full and data else chosen["candidates"],
            queries=queries if queries is not None else None if full and data else chosen["queries"],
        )
        with _on_sigterm(_stopped):  # its unfinished work folder is removed, as after Ctrl-C
            results, paths = evaluate(settings, log=typer.echo)
    except (DataError, FillerError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    except OSError as e:  # writing the results (a full disk): the unfinished run folder is already removed
        _fail(f"{e.filename or out}: cannot write ({e.strerror or e}); the run was not saved")
    typer.echo("")
    typer.echo(paths["table"].read_text())
    typer.echo(f"wrote {', '.join(str(p) for p in paths.values())} and TREC runs under {paths['json'].parent}/runs "
               f"({results['wall_seconds'] / 60:.1f} min)")


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Training config (configs/train/*.toml)."),
    objective: str = typer.Option(None, help="Override the config: contrastive | diffusion."),
    resume: bool = typer.Option(False, help="Continue from the run folder's last checkpoint."),
    steps: int = typer.Option(None, help="Override the number of steps."),
    output: Path = typer.Option(None, help="Override the run folder."),
) -> None:
    """Train a LoRA adapter: contrastive (DiffEmbed recipe) or masked-diffusion adaptation.

    Writes the run folder (the config's output, or --output): checkpoint/, log.jsonl, loss.png, card.md and adapter/.

    Index with the run's adapter/model.toml (--model RUN/adapter/model.toml).

    A folder that holds a run is refused without --resume; --resume refuses a config that trains differently.

    Ctrl-C stops after the current step with a checkpoint (exit 130; Ctrl-C again stops at once).

    The config's max_minutes stops it the same way (exit 75). --resume continues either."""
    from dataclasses import replace

    from .train.trainer import TrainConfig, Trainer, check_output

    # every override the run was started with: the printed resume command repeats them all
    overrides = {"objective": objective, "steps": steps, "output": str(output) if output else None}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    folder = output or "the run folder"
    try:
        cfg = replace(TrainConfig.from_toml(config), **overrides)
        folder = cfg.output
        check_output(cfg, resume)  # before the model loads
        result = Trainer(cfg).train(resume=resume)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        _fail(str(e))
    except KeyboardInterrupt:  # a second Ctrl-C: the checkpoint on disk is the last one saved
        typer.echo(f"\nstopped at once: steps after the last checkpoint in {folder} (if any) are lost. "
                   f"Continue with: {_resume_command(config, overrides)}", err=True)
        raise typer.Exit(code=TRAIN_INTERRUPTED) from None
    typer.echo(f"{cfg.output}: {_count(result['steps'], 'step')} in {result['seconds']:.0f}s; adapter in "
               f"{cfg.output}/adapter")
    if result["interrupted"]:
        typer.echo(f"continue with: {_resume_command(config, overrides)}")
        raise typer.Exit(code=TRAIN_INTERRUPTED)
    if not result["finished"]:  # stopped by max_minutes: a script can tell "continue later" from "done"
        raise typer.Exit(code=TRAIN_UNFINISHED)


TRAIN_UNFINISHED = 75  # EX_TEMPFAIL: the run stopped at its time limit; --resume continues it
TRAIN_INTERRUPTED = 130  # the shell's code for Ctrl-C, checkpointed all the same


def _resume_command(config: Path, overrides: dict) -> str:
    """The command that continues this run: with every override it was started with (--output names the run folder;
    without --steps the config's steps, without --objective a refusal)."""
    import shlex

    options = "".join(f" --{k} {shlex.quote(str(v))}" for k, v in overrides.items())
    return f"longretr train --config {shlex.quote(str(config))}{options} --resume"


@app.command()
def demo_corpus(
    out: Path = typer.Argument(Path("corpus"), help="Where to write the documents."),
    limit: int = typer.Option(300, help="Number of documents."),
) -> None:
    """Write the demo corpus: pydoc pages of the Python standard library."""
    from .democorpus import build

    try:
        count = build(out, limit)
    except ValueError as e:
        _fail(str(e))
    typer.echo(f"wrote {count} stdlib documentation pages to {out}/")


def _count(n: int, noun: str, plural: str = "") -> str:
    """n and its noun, singular for 1 only: 1 document, 2 documents, 0 documents (plural: when not noun + "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


if __name__ == "__main__":
    app()
