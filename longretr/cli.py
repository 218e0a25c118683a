"""The `longretr` command line: one verb per job."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Long-document search with bidirectional LM embeddings (whole documents, up to 32k tokens).")

INDEX_OPT = typer.Option(Path("indexes/default"), "--index", "-i", help="Index folder.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def index(
    corpus: Path = typer.Argument(..., help="Folder (or file) of .txt/.md/.rst/.jsonl/.parquet documents."),
    index: Path = INDEX_OPT,
    model: str = typer.Option("default", "--model", "-m", help="Model config name or .toml path."),
    rebuild: bool = typer.Option(False, help="Re-encode everything instead of updating incrementally."),
    dtype: str = typer.Option(None, help="Override the config's dtype (float32, bfloat16)."),
) -> None:
    """Encode every document under CORPUS into an index folder (new and changed ones only)."""
    from .embedder import Embedder
    from .indexer import index_corpus
    from .store import IndexFolderError

    if not corpus.exists():
        _fail(f"{corpus}: no such file or folder")
    try:
        embedder = Embedder(model, dtype=dtype)
        summary = index_corpus(corpus, index, embedder, rebuild=rebuild)
    except (IndexFolderError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    typer.echo(f"{index}: {summary.line()}")


@app.command()
def search(
    query: str = typer.Argument(None, help="The query text."),
    index: Path = INDEX_OPT,
    k: int = typer.Option(10, "-k", help="Number of results."),
    model: str = typer.Option(None, "--model", "-m", help="Model config; default: the one the index was built with."),
    as_json: bool = typer.Option(False, "--json", help="Print results as JSON."),
    queries: Path = typer.Option(None, help="Batch mode: JSONL (id, text) or TSV (id<TAB>text) of queries."),
    output: Path = typer.Option(None, help="Batch mode output: .trec run file, or .jsonl."),
) -> None:
    """Search an index: one QUERY, or a batch with --queries."""
    from .embedder import Embedder
    from .search import ModelMismatch, Searcher, read_queries, trec_lines
    from .store import IndexFolderError

    if (query is None) == (queries is None):
        _fail("give either a QUERY or --queries FILE")
    if k < 1:
        _fail("-k must be at least 1")
    try:
        searcher = Searcher(index, Embedder(model) if model else None)
        batch = read_queries(queries) if queries else [("q", query)]
    except (IndexFolderError, ModelMismatch, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    results = searcher.search([text for _, text in batch], k)
    if queries:
        lines = []
        for (qid, text), hits in zip(batch, results):
            if output is not None and output.suffix == ".trec":
                lines += trec_lines(qid, hits, "longretr")
            else:
                lines.append(json.dumps({"id": qid, "query": text, "hits": [h.to_dict() for h in hits]}))
        body = "\n".join(lines) + "\n"
        if output is None:
            sys.stdout.write(body)
        else:
            output.write_text(body)
            typer.echo(f"wrote {len(batch)} queries' results to {output}", err=True)
        return
    hits = results[0]
    if as_json:
        typer.echo(json.dumps([h.to_dict() for h in hits], indent=2))
        return
    for h in hits:
        typer.secho(f"{h.rank:>3}  {h.score:.4f}  {h.title}", bold=True)
        typer.echo(f"     {h.path}")
        typer.echo(f"     {h.snippet}")


@app.command()
def demo_corpus(
    out: Path = typer.Argument(Path("corpus"), help="Where to write the documents."),
    limit: int = typer.Option(300, help="Number of documents."),
) -> None:
    """Write the demo corpus: pydoc pages of the Python standard library."""
    from .democorpus import build

    typer.echo(f"wrote {build(out, limit)} stdlib documentation pages to {out}/")


if __name__ == "__main__":
    app()
