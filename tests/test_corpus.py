import hashlib
import importlib.util
import io
import json
import os
import re
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from longretr import democorpus
from longretr.cli import app
from longretr.corpus import describe_others, read_corpus
from longretr.democorpus import stdlib_modules
from longretr.queries import read_queries


def test_reads_text_files_and_tables(tmp_path):
    (tmp_path / "a.md").write_text("intro\n# Markdown Title\nbody")
    (tmp_path / "b.rst").write_text("RST Title\n=========\n\nbody")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("no heading here")
    (tmp_path / "rows.jsonl").write_text(json.dumps({"id": "r1", "text": "row one", "title": "One"}) + "\n"
                                         + json.dumps({"id": "r2", "text": "row two"}) + "\n")
    pq.write_table(pa.table({"id": ["p1"], "text": ["parquet row"]}), tmp_path / "t.parquet")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    docs = {d.id: d for d in read_corpus(tmp_path)}
    assert set(docs) == {"a.md", "b.rst", "sub/c.txt", "r1", "r2", "p1"}
    assert docs["a.md"].title == "Markdown Title"
    assert docs["b.rst"].title == "RST Title"
    assert docs["sub/c.txt"].title == "c"
    assert docs["r1"].title == "One" and docs["r2"].path == "rows.jsonl#r2"
    assert docs["p1"].text == "parquet row"
    # stable ids and hashes across runs: the hash is the text's SHA-256 (a run compared with itself passed with any
    # constant hash, which would leave every changed document "unchanged")
    again = {d.id: d.sha256 for d in read_corpus(tmp_path)}
    assert again == {i: hashlib.sha256(d.text.encode()).hexdigest() for i, d in docs.items()}


def test_files_of_other_types_are_named_not_read(tmp_path):
    (tmp_path / "a.txt").write_text("plain")
    (tmp_path / "notes.markdown").write_text("# Notes\nbody")
    (tmp_path / "guide.adoc").write_text("= Guide\nbody")
    (tmp_path / "page.xhtml").write_text("<html><title>X</title><body><p>text</p></body></html>")
    (tmp_path / "b.xml").write_text("<a>not read</a>")
    (tmp_path / "c.xml").write_text("<a>not read</a>")
    (tmp_path / "README").write_text("no suffix")
    (tmp_path / ".gitignore").write_text("hidden files are neither read nor counted")
    others: list[Path] = []
    docs = {d.id: d for d in read_corpus(tmp_path, others=others)}
    assert set(docs) == {"a.txt", "notes.markdown", "guide.adoc", "page.xhtml"}
    assert docs["notes.markdown"].title == "Notes"
    assert (docs["page.xhtml"].title, docs["page.xhtml"].text) == ("X", "text")  # a title outside <head> is not text
    assert sorted(p.name for p in others) == ["README", "b.xml", "c.xml"]
    line = describe_others(others)
    assert line.startswith("3 files of other types not read (.xml 2, no suffix 1); longretr reads ")
    assert ".txt" in line and ".pdf" in line


def test_reading_shows_progress_over_files(tmp_path, capsys):
    for n in range(3):
        (tmp_path / f"{n}.txt").write_text(f"document {n}")
    assert len(list(read_corpus(tmp_path, progress=True))) == 3
    err = capsys.readouterr().err
    assert "reading" in err and "0/3 " in err  # the bar counts the files found
    list(read_corpus(tmp_path))
    assert capsys.readouterr().err == ""


def test_html_pages_are_read_as_their_visible_text(tmp_path):
    (tmp_path / "page.html").write_text(
        "<!DOCTYPE html><html><head><title>11.8. Partial\n Indexes</title><style>p {color: red}</style></head>"
        "<body><div class='nav'>Prev <a href='x.html'>Up</a></div><!-- hidden remark -->"
        "<h1>Partial Indexes</h1><p>A partial\n   index is built over a <code>subset</code> of a table.</p>"
        "<pre>CREATE INDEX i ON t (c)\n    WHERE c IS NULL;</pre><ul><li>one</li><li>two<br>lines</li></ul>"
        "<script>var secret = 1;</script></body></html>")
    (tmp_path / "old.htm").write_bytes(
        b'<html><head><meta charset="iso-8859-1"></head><body><p>caf\xe9 cr\xe8me</p></body></html>')
    (tmp_path / "blank.html").write_text("<html><head><title>Nothing</title></head><body> <script>x()</script></body>")
    skipped: list[str] = []
    docs = {d.id: d for d in read_corpus(tmp_path, skipped=skipped)}
    assert set(docs) == {"page.html", "old.htm"} and skipped == [str(tmp_path / "blank.html")]
    page = docs["page.html"]
    assert page.title == "11.8. Partial Indexes"
    assert page.text.splitlines() == [
        "Prev Up", "Partial Indexes", "A partial index is built over a subset of a table.",
        "CREATE INDEX i ON t (c)", "WHERE c IS NULL;", "one", "two", "lines"]
    assert docs["old.htm"].text == "caf\xe9 cr\xe8me" and docs["old.htm"].title == "old"


def _pdf(pages: list[str], title: str | None = None) -> bytes:
    """A real PDF with one line of text per page, written by matplotlib's PDF backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    buf = io.BytesIO()
    with PdfPages(buf, metadata={"Title": title} if title else None) as pdf:
        for text in pages:
            fig = plt.figure()
            fig.text(0.1, 0.5, text)
            pdf.savefig(fig)
            plt.close(fig)
    return buf.getvalue()


def test_pdfs_are_read_as_the_text_of_their_pages(tmp_path, capsys):
    from pypdf import PdfReader, PdfWriter

    (tmp_path / "manual.pdf").write_bytes(_pdf(["A partial index covers some rows.", "Predicates pick them."],
                                              title="Partial Indexes"))
    (tmp_path / "untitled.PDF").write_bytes(_pdf(["one page"]))
    locked = PdfWriter(clone_from=PdfReader(io.BytesIO(_pdf(["secret text"]))))
    locked.encrypt("password")
    with open(tmp_path / "locked.pdf", "wb") as f:
        locked.write(f)
    (tmp_path / "scanned.pdf").write_bytes(_pdf([""]))
    (tmp_path / "truncated.pdf").write_bytes(_pdf(["cut short"])[:200])
    skipped: list[str] = []
    docs = {d.id: d for d in read_corpus(tmp_path, skipped=skipped)}
    assert set(docs) == {"manual.pdf", "untitled.PDF"} and len(skipped) == 3
    assert docs["manual.pdf"].title == "Partial Indexes"
    assert docs["manual.pdf"].text == "A partial index covers some rows.\n\nPredicates pick them."
    assert docs["untitled.PDF"].title == "untitled" and docs["untitled.PDF"].text == "one page"
    err = capsys.readouterr().err
    for name, reason in [("locked.pdf", "encrypted"), ("scanned.pdf", "OCR"), ("truncated.pdf", "not a readable PDF")]:
        assert any(name in line and reason in line for line in err.splitlines()), (name, err)


def test_a_damaged_pdf_gets_one_warning_line(tmp_path, capsys, caplog):
    """pypdf's own warnings ("EOF marker not found") would be a second line on stderr, without the file's name."""
    (tmp_path / "truncated.pdf").write_bytes(_pdf(["cut short"])[:200])
    (tmp_path / "fine.pdf").write_bytes(_pdf(["fine"]))
    caplog.set_level("WARNING")
    skipped: list[str] = []
    assert [d.id for d in read_corpus(tmp_path, skipped=skipped)] == ["fine.pdf"] and len(skipped) == 1
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pypdf")] == []
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert lines[0].startswith(f"longretr: skipping {tmp_path / 'truncated.pdf'}: not a readable PDF")


def test_bad_files_are_named_and_skipped(tmp_path, capsys):
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / "binary.txt").write_bytes(b"abc\x00def")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "empty.md").write_text("   \n")
    (tmp_path / "broken.jsonl").write_text('{"id": 1, "text": "ok"}\n{not json\n')
    (tmp_path / "noid.jsonl").write_text('{"text": "no id"}\n')
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 not really")
    os.symlink(tmp_path, tmp_path / "loop")
    skipped: list[str] = []
    docs = list(read_corpus(tmp_path, skipped=skipped))
    assert [d.id for d in docs] == ["good.txt"]
    err = capsys.readouterr().err
    for name, reason in [("binary.txt", "binary"), ("latin1.txt", "invalid UTF-8"), ("empty.md", "empty"),
                         ("broken.jsonl", "line 2"), ("noid.jsonl", "'id'"), ("corrupt.parquet", "Parquet"),
                         ("loop", "folder already read (a symlink to it, or a loop)")]:
        assert any(name in line and reason in line for line in err.splitlines()), (name, err)
    assert len(skipped) == 6


def test_text_utf8_cannot_store_and_null_ids_are_named_and_skipped(tmp_path, capsys):
    """A file name of undecodable bytes or lone surrogates from JSON escapes failed the whole run after encoding,
    naming no file (UTF-8 cannot store them); a null id became the id "None"."""
    (tmp_path / "good.txt").write_text("fine")
    (tmp_path / os.fsdecode(b"bad\xff.txt")).write_text("a name that is not UTF-8")
    (tmp_path / "surrogate.jsonl").write_text('{"id": "a", "text": "half a pair \\ud800"}\n')
    (tmp_path / "nullid.jsonl").write_text('{"id": null, "text": "no id"}\n')
    skipped: list[str] = []
    assert [d.id for d in read_corpus(tmp_path, skipped=skipped)] == ["good.txt"]
    err = capsys.readouterr().err
    for name, reason in [("bad\\udcff.txt", "file name is not valid UTF-8"), ("surrogate.jsonl", "line 1: id, text"),
                         ("nullid.jsonl", "line 1: id must be")]:
        assert any(name in line and reason in line for line in err.splitlines()), (name, err)
    assert len(skipped) == 3


def test_table_fields_of_the_wrong_type_are_named(tmp_path, capsys):
    """A number as text was reported as "empty text" (the row is still skipped alone); a list as title became its
    str(), a bytes id "b'...'" (the file is skipped, as for other bad ids). A number as title stays its title."""
    rows = {"int_text.jsonl": {"id": "z", "text": 123}, "list_text.jsonl": {"id": "z", "text": ["a"]},
            "int_title.jsonl": {"id": "z", "text": "fine", "title": 5}, "bool_id.jsonl": {"id": True, "text": "x"},
            "list_id.jsonl": {"id": [1], "text": "x"},
            "list_title.jsonl": {"id": "w", "text": "# Heading", "title": [1]}}
    for name, row in rows.items():
        (tmp_path / name).write_text(json.dumps(row) + "\n")
    with (tmp_path / "int_text.jsonl").open("a") as f:  # a bad text skips its row, not the file
        f.write(json.dumps({"id": "y", "text": "kept"}) + "\n")
    pq.write_table(pa.table({"id": [b"p1"], "text": ["parquet row"]}), tmp_path / "bytes_id.parquet")
    (tmp_path / "ok.jsonl").write_text(json.dumps({"id": 7, "text": "seven", "title": None}) + "\n"
                                       + json.dumps({"id": "n", "text": None}) + "\n")
    skipped: list[str] = []
    docs = list(read_corpus(tmp_path, skipped=skipped))
    assert [(d.id, d.title) for d in docs] == [("y", "y"), ("z", "5"), ("w", "Heading"), ("7", "7")]
    assert len(skipped) == 4
    err = capsys.readouterr().err
    for name, reason in [("int_text.jsonl line 1", "text must be a string, got int 123"),
                         ("list_text.jsonl line 1", "text must be a string, got list ['a']"),
                         ("list_text.jsonl", "no documents in file"),
                         ("list_title.jsonl line 1", "title must be a string or a number, got list [1]; titled"),
                         ("bool_id.jsonl", "line 1: id must be a string or a number, got bool True"),
                         ("list_id.jsonl", "line 1: id must be a string or a number, got list [1]"),
                         ("bytes_id.parquet", "row 1: id must be a string or a number, got bytes b'p1'"),
                         ("ok.jsonl line 2", "empty text")]:  # a null text (Parquet's missing value) is empty
        assert any(f"{name}: {reason}" in line for line in err.splitlines()), (name, err)


def test_utf16_and_utf32_text_with_a_bom_is_read(tmp_path, capsys):
    """Windows Notepad's "Unicode" (UTF-16 LE with a BOM) was skipped as "binary file (NUL bytes)". The hash is the
    text's, as for UTF-8 files; the size is the file's."""
    text = "# Caf\xe9\nhello world \U0001f600"
    for name, encoding in [("le16.txt", "utf-16"), ("be16.txt", "utf-16-be"), ("le32.md", "utf-32"),
                           ("be32.md", "utf-32-be"), ("sig8.txt", "utf-8-sig")]:
        bom = b"\xfe\xff" if encoding == "utf-16-be" else b"\x00\x00\xfe\xff" if encoding == "utf-32-be" else b""
        (tmp_path / name).write_bytes(bom + text.encode(encoding))
    (tmp_path / "rows.jsonl").write_bytes(json.dumps({"id": "r", "text": text}).encode("utf-16"))
    (tmp_path / "odd.txt").write_bytes(b"\xff\xfeh\x00i")  # half a UTF-16 character at the end
    (tmp_path / "nul.txt").write_bytes(b"\xff\xfeh\x00\x00\x00i\x00")  # a BOM, then a NUL: binary
    (tmp_path / "bom_only.txt").write_bytes(b"\xff\xfe")
    skipped: list[str] = []
    docs = {d.id: d for d in read_corpus(tmp_path, skipped=skipped)}
    assert set(docs) == {"le16.txt", "be16.txt", "le32.md", "be32.md", "sig8.txt", "r"} and len(skipped) == 3
    for doc in docs.values():
        assert doc.text == text and doc.title == "Caf\xe9", doc  # no BOM left in the text
        assert doc.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert docs["le16.txt"].size == len(text.encode("utf-16")) and docs["sig8.txt"].size == len(text.encode()) + 3
    err = capsys.readouterr().err
    for name, reason in [("odd.txt", "invalid UTF-16-LE at byte 4"), ("nul.txt", "binary file (NUL characters"),
                         ("bom_only.txt", "empty file")]:
        assert any(f"{name}: {reason}" in line for line in err.splitlines()), (name, err)


def _read_queries(path: Path, content: str) -> list[tuple[str, str]]:
    path.write_text(content)
    return read_queries(path)


def test_query_files_refuse_repeated_ids(tmp_path):
    """A repeated id was accepted, and the TREC run got two rank-1 lists for it."""
    for name, content, line, qid in [("dup.tsv", "q1\tfox\nq2\tdog\n\nq1\tcat\n", 4, "q1"),
                                     ("dup.jsonl", '{"id": 1, "text": "a"}\n{"id": "1", "text": "b"}\n', 2, "1")]:
        with pytest.raises(ValueError) as e:
            _read_queries(tmp_path / name, content)
        assert str(e.value) == f"{tmp_path / name}:{line}: query id {qid!r} repeated (first on line 1)"


def test_query_files_skip_a_tsv_header(tmp_path):
    """A first line `id<TAB>text` became a query with the id "id"; other first lines are queries, as before."""
    for content in ("id\ttext\nq1\tfox\n", "ID\tText\r\n\nq1\tfox\n", "\ufeffid\ttext\nq1\tfox\n"):  # BOM: Excel
        assert _read_queries(tmp_path / "h.tsv", content) == [("q1", "fox")], content
    assert _read_queries(tmp_path / "later.tsv", "q0\tx\nid\ttext\n") == [("q0", "x"), ("id", "text")]
    assert _read_queries(tmp_path / "other.tsv", "qid\tquery\nq1\tfox\n") == [("qid", "query"), ("q1", "fox")]
    with pytest.raises(ValueError, match="no queries"):
        _read_queries(tmp_path / "only.tsv", "id\ttext\n")


def test_fifos_and_unsupported_single_files_are_named(tmp_path, capsys):
    """A FIFO named like a document blocked the run forever; a FIFO as the corpus read as an empty one (every indexed
    document "gone"); a single .csv file was called "not a readable Parquet file"."""
    (tmp_path / "good.txt").write_text("fine")
    os.mkfifo(tmp_path / "pipe.txt")
    docs, skipped = [], []
    reader = threading.Thread(target=lambda: docs.extend(read_corpus(tmp_path, skipped=skipped)), daemon=True)
    reader.start()
    reader.join(30)
    if reader.is_alive():  # blocked opening the FIFO: give it a writer, so the thread ends
        os.close(os.open(tmp_path / "pipe.txt", os.O_WRONLY | os.O_NONBLOCK))
        reader.join(30)
        pytest.fail("reading the corpus blocked on a FIFO")
    assert [d.id for d in docs] == ["good.txt"] and skipped == [str(tmp_path / "pipe.txt")]
    assert "pipe.txt: not a regular file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a regular file or folder"):
        list(read_corpus(tmp_path / "pipe.txt"))
    (tmp_path / "table.csv").write_text("id,text\n1,fox\n")
    assert list(read_corpus(tmp_path / "table.csv", skipped=skipped)) == []
    assert "table.csv: unsupported file type .csv" in capsys.readouterr().err


def test_demo_query_sets_point_at_demo_pages_without_naming_them():
    modules = set(stdlib_modules())
    sets = {name: [json.loads(line) for line in (Path(__file__).parent / "data" / name).read_text().splitlines()]
            for name in ("demo_queries.jsonl", "demo_queries_heldout.jsonl", "demo_queries_fresh.jsonl")}
    assert [len(rows) for rows in sets.values()] == [44, 87, 65]
    every = [row for rows in sets.values() for row in rows]
    assert len({row["id"] for row in every}) == len(every)
    for rows in sets.values():
        assert len({row["relevant"] for row in rows}) == len(rows)  # one query per page within a set
    pages = [{row["relevant"] for row in rows} for rows in sets.values()]
    assert sum(map(len, pages)) == len(set().union(*pages))  # each set asks about pages no other set asks about
    for row in every:
        module = row["relevant"].removesuffix(".txt")
        assert module in modules, row
        assert not re.search(rf"\b{re.escape(module)}\b", row["text"], re.IGNORECASE), row


def test_pgdocs_queries_point_at_listed_pages_without_naming_them():
    data = Path(__file__).parent / "data"
    pages = data.joinpath("pgdocs_pages.txt").read_text().split()
    sets = [[json.loads(line) for line in data.joinpath(name).read_text().splitlines()]
            for name in ("pgdocs_queries.jsonl", "pgdocs_queries_fresh.jsonl")]
    assert len(pages) == len(set(pages)) == 300 and [len(rows) for rows in sets] == [70, 60]
    rows = [row for rows in sets for row in rows]
    # one query per page, and the fresh set asks about pages the first does not
    assert len({row["id"] for row in rows}) == len({row["relevant"] for row in rows}) == len(rows)
    for row in rows:
        assert row["relevant"] in pages, row
        stem = row["relevant"].removesuffix(".html")
        names = {stem.replace("-", " "), re.sub(r"^(app|sql)-", "", stem)}
        assert not any(re.search(rf"\b{re.escape(name)}\b", row["text"], re.IGNORECASE) for name in names), row


def test_demo_corpus_pages_are_stdlib_only_and_the_same_on_every_run(tmp_path, monkeypatch):
    # cgi's FieldStorage(environ=os.environ) put the whole environment in its page; logging and json.decoder showed
    # memory addresses (a new hash every run, so `index` re-encoded them); setuptools' distutils came from
    # site-packages.
    modules = [m for m in ("cgi", "distutils", "json.decoder", "logging") if importlib.util.find_spec(m)]
    monkeypatch.setattr(democorpus, "stdlib_modules", lambda: modules)
    monkeypatch.setenv("LONGRETR_TEST_SECRET", "hunter2-token")
    assert CliRunner().invoke(app, ["demo-corpus", str(tmp_path / "a"), "--limit", "9"]).exit_code == 0
    monkeypatch.setenv("LONGRETR_TEST_SECRET", "another-token")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(app, ["demo-corpus", "b", "--limit", "9"]).exit_code == 0
    pages = {p.name: p.read_text() for p in sorted((tmp_path / "a").iterdir())}
    assert pages == {p.name: p.read_text() for p in sorted((tmp_path / "b").iterdir())}
    assert {"json.decoder.txt", "logging.txt"} <= set(pages)
    distutils = importlib.import_module("distutils") if "distutils" in modules else None
    if distutils is not None and "site-packages" in Path(distutils.__file__).parts:
        assert "distutils.txt" not in pages
    for name, text in pages.items():
        assert "-token" not in text and not re.search(r" at 0x[0-9a-f]+", text), name


def test_demo_corpus_refuses_bad_targets_and_leaves_exactly_its_pages(tmp_path):
    run = CliRunner().invoke
    out = tmp_path / "demo"
    for limit in ("0", "-1"):
        result = run(app, ["demo-corpus", str(out), "--limit", limit])
        assert result.exit_code == 2 and f"--limit must be at least 1, got {limit}" in result.output
        assert not out.exists()
    (tmp_path / "file").write_text("x")
    result = run(app, ["demo-corpus", str(tmp_path / "file"), "--limit", "2"])
    assert result.exit_code == 2 and f"{tmp_path / 'file'}: not a folder" in result.output
    assert run(app, ["demo-corpus", str(out), "--limit", "3"]).exit_code == 0
    first = sorted(p.name for p in out.iterdir())
    assert len(first) == 3
    result = run(app, ["demo-corpus", str(out), "--limit", "2"])  # again, smaller: exactly its pages, nothing stale
    assert result.exit_code == 0 and sorted(p.name for p in out.iterdir()) == first[:2]
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    (out / "notes.md").write_text("mine")
    result = run(app, ["demo-corpus", str(out), "--limit", "2"])
    assert result.exit_code == 2 and f"{out}: not empty and not a demo corpus (holds notes.md)" in result.output
    assert (out / "notes.md").read_text() == "mine"


def test_titles_of_text_files_and_table_rows(tmp_path):
    files = {"csharp.md": "# Learning C#\nbody", "fenced.md": "intro\n```sh\n# install deps\n```\n",
             "blank.md": "#  \nbody", "front.md": "---\nlayout: post\ntitle: 'Front Matter Title'\n---\n# Later\n",
             "notes.org": "# -*- mode: org -*-\n#+TITLE: Org Title\n* First headline\n",
             "plain.org": "# -*- mode: org -*-\n* First headline\n", "guide.adoc": "= Adoc Title\n\ntext\n",
             "closed.md": "## Closed heading ##\n", "emptyfm.md": "---\ntitle: ''\n---\n# Prerequisites\n",
             "over.rst": "~~~~~\nTitle\n~~~~~\n\nbody\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    rows = [{"id": "arxiv:2301.12345", "text": "plain"}, {"id": "10.1000/xyz.123", "text": "plain"},
            {"id": "docs/intro.md", "text": "plain"}, {"id": "x", "text": "a\u2028b"}]  # U+2028 raw: valid JSON
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    docs = {d.id: d for d in read_corpus(tmp_path)}
    assert {i: d.title for i, d in docs.items()} == {
        "csharp.md": "Learning C#", "fenced.md": "fenced", "blank.md": "blank", "front.md": "Front Matter Title",
        "notes.org": "Org Title", "plain.org": "First headline", "guide.adoc": "Adoc Title",
        "closed.md": "Closed heading", "emptyfm.md": "Prerequisites", "over.rst": "Title",
        "arxiv:2301.12345": "arxiv:2301.12345", "10.1000/xyz.123": "10.1000/xyz.123",
        "docs/intro.md": "intro", "x": "x"}
    assert docs["x"].text == "a\u2028b"  # the file was skipped whole: splitlines() cut the row at U+2028


def test_html_charsets_a_missing_head_end_and_hidden_text(tmp_path):
    pages = {"nohead.html": b"<html>\n<head>\n<meta charset='utf-8'>\n<title>Page</title>\n<body>\n<p>Body text</p>",
             "nobody.html": b"<head><title>T</title><p>Hello</p>",
             "stray.html": "<p>caf\xe9 \u2014</p>".encode() + b"\xe9",  # UTF-8 but for a stray byte: still UTF-8
             "c1.html": b"<p>caf\xe9</p>\x81",  # not UTF-8, and 0x81 is not windows-1252: bs4 guessed Cyrillic
             "quotes.html": b"<meta charset='iso-8859-1'><p>\x93q\x94</p>",  # latin-1 read as windows-1252
             "shown.html": b"<body style='display:none'><p>Product</p><div style='display: none'>The answer</div>"
                           b"<div hidden>secret</div><div hidden='until-found'>findme</div></body>",
             "u16.html": "<html><title>Wide</title><p>utf16 page</p></html>".encode("utf-16"),
             "latin1.html": "<p>na\xefve caf\xe9 d\xe9j\xe0 vu</p>".encode("latin-1"),
             "greek.html": "<head><meta charset='iso-8859-7'></head><p>\xe1\xe2</p>".encode("latin-1"),
             "hidden.html": b"<body><svg><title>Icon</title></svg><p>shown</p><div hidden>no</div>"
                            b"<select><option>a</option><option>b</option></select></body>"}
    for name, raw in pages.items():
        (tmp_path / name).write_bytes(raw)
    docs = {d.id: (d.title, d.text) for d in read_corpus(tmp_path)}
    assert docs == {"nohead.html": ("Page", "Body text"), "u16.html": ("Wide", "utf16 page"),
                    "nobody.html": ("T", "Hello"), "stray.html": ("stray", "caf\xe9 \u2014\n\ufffd"),
                    "c1.html": ("c1", "caf\xe9\n\ufffd"), "quotes.html": ("quotes", "\u201cq\u201d"),
                    "shown.html": ("shown", "Product\nThe answer\nfindme"),
                    "latin1.html": ("latin1", "na\xefve caf\xe9 d\xe9j\xe0 vu"),
                    "greek.html": ("greek", "\u03b1\u03b2"),
                    "hidden.html": ("hidden", "shown\na\nb")}


def test_pdf_words_broken_at_a_line_end_are_joined_and_titles_collapsed(tmp_path):
    text = "the inform-\nation in Jean-\nPaul's docu-\nments, long-\nterm\ninformation in documents"
    (tmp_path / "a.pdf").write_bytes(_pdf([text], title=" Multi\nline\ttitle "))
    (doc,) = read_corpus(tmp_path)
    assert doc.title == "Multi line title"
    assert doc.text.startswith("the information in Jean-Paul's documents, long-term"), doc.text  # whole elsewhere


def test_a_table_may_be_larger_than_a_text_file(tmp_path, monkeypatch, capsys):
    import longretr.corpus

    monkeypatch.setattr(longretr.corpus, "MAX_FILE_BYTES", 100)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"id": str(i), "text": "x" * 20}) + "\n" for i in range(9)))
    (tmp_path / "big.txt").write_text("y" * 200)
    assert [d.id for d in read_corpus(tmp_path)] == [str(i) for i in range(9)]
    assert "big.txt: file is 0 MiB, over the 0 MiB limit" in capsys.readouterr().err


def test_a_repeated_id_across_files_names_the_kept_one(tmp_path, embedder, capsys):
    from longretr.indexer import index_corpus

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "note.md").write_text("# Note\nthe real file")
    (tmp_path / "corpus" / "coll.jsonl").write_text(json.dumps({"id": "note.md", "text": "a row"}) + "\n")
    (tmp_path / "corpus" / "odd\nname.txt").write_bytes(b"\x00")
    s = index_corpus(tmp_path / "corpus", tmp_path / "idx", embedder, progress=False)
    err = capsys.readouterr().err
    assert "skipping note.md: duplicate document id 'note.md'; keeping the one from coll.jsonl#note.md" in err
    assert "/odd\\nname.txt: binary file" in err  # one line, the newline shown escaped
    assert s.documents == 1


def test_jsonl_problems_are_named_by_line_as_an_editor_counts(tmp_path, capsys):
    (tmp_path / "rows.jsonl").write_text('{"id": "a", "text": "fine"}\n\n\n{"id": "b", "text": ""}\n')
    (tmp_path / "mac.jsonl").write_bytes(b'{"id": "c", "text": "old"}\r{"id": "d", "text": "mac"}\r')
    (tmp_path / "deep.jsonl").write_text("[" * 100_000)  # a traceback (RecursionError), not a skipped file
    assert sorted(d.id for d in read_corpus(tmp_path)) == ["a", "c", "d"]
    err = capsys.readouterr().err
    assert "rows.jsonl line 4: empty text" in err  # "row 2": the second non-blank line
    assert "deep.jsonl: line 1: invalid JSON (RecursionError" in err
