"""Read a folder of documents: plain text (.txt/.md/.rst/...), .html/.htm and .pdf files (one document each; HTML
is reduced to its visible text, a PDF to the text of its pages) and .jsonl/.parquet files (one document per row,
columns id, text and optional title). Files of other types are not read; the caller is told which."""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import numbers
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .queries import encodes

TEXT_SUFFIXES = {".txt", ".text", ".md", ".markdown", ".rst", ".adoc", ".asciidoc", ".org"}
HTML_SUFFIXES = {".html", ".htm", ".xhtml"}
PDF_SUFFIXES = {".pdf"}
TABLE_SUFFIXES = {".jsonl", ".parquet"}
SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | TABLE_SUFFIXES
MAX_FILE_BYTES = 64 * 1024 * 1024  # a text file this large is almost surely not one document
MAX_TABLE_BYTES = 1024 * 1024 * 1024  # a table holds many: its rows are read into memory, as every document is


@dataclass
class Document:
    id: str
    text: str
    title: str
    path: str
    sha256: str
    size: int
    mtime: float


class SkipFile(Exception):
    """A file that cannot be read as documents; the message says why."""


class NoText(SkipFile):
    """A file read as it is that holds no text (emptied, an HTML page with nothing visible, a scanned PDF): unlike an
    unreadable one, its indexed documents are gone, as if it had been deleted."""


class Gone(NoText):
    """A file deleted after the folder was listed, before it was read: its indexed documents go, as they would had
    it been deleted before the run."""


def _not_found(path: Path) -> SkipFile:
    """A listed file that is not there when read: deleted (its documents go), or a symlink whose target is missing
    (an unmounted drive: unreadable now, its documents kept)."""
    if not os.path.lexists(path):
        return Gone("deleted while the run was reading the folder")
    return SkipFile("cannot read (a symlink whose target is missing)")


def warn(path: Path | str, reason: str) -> None:
    # control characters in a file name ("a\nb.md") are escaped, so the warning stays one line, and so are the
    # surrogates of a name of undecodable bytes, or a stderr without backslashreplace raises
    line = "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in f"longretr: skipping {path}: {reason}")
    tqdm.write(line, file=sys.stderr)  # above a progress bar, not on it


def iter_files(root: Path, skipped: list[str] | None = None, others: list[Path] | None = None) -> Iterator[Path]:
    """Supported files under root in a stable order; symlinks are followed once, loops skipped. A folder that
    cannot be read gets a warning and is appended to `skipped`: its documents are not gone (the indexer keeps them).
    Files of other types (hidden ones aside) are appended to `others`."""
    seen: set[tuple[int, int]] = set()

    def cannot_read(path: str, e: OSError) -> None:
        warn(path, f"cannot read folder ({e.strerror or e})")
        if skipped is not None:
            skipped.append(str(path))

    # os.walk drops a folder it cannot list silently unless told
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=lambda e: cannot_read(e.filename, e)):
        try:
            st = os.stat(dirpath)
        except OSError as e:
            cannot_read(dirpath, e)
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            warn(dirpath, "folder already read (a symlink to it, or a loop)")
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if is_index_folder(Path(dirpath)):  # its docs table has id and text columns, its notice is a .txt
            if Path(dirpath) == root:
                raise ValueError(f"{root}: a longretr index folder, not a corpus")
            warn(dirpath, "a longretr index folder, not corpus documents")
            dirnames[:] = []
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith("."):
                continue
            if path.suffix.lower() in SUFFIXES:
                yield path
            elif others is not None:
                others.append(path)


def describe_others(others: list[Path]) -> str:
    """'3 files of other types not read (.xml 2, no suffix 1); longretr reads .htm, ...' for a run's summary."""
    counts = Counter(p.suffix.lower() or "no suffix" for p in others)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:8])
    more = ", ..." if len(counts) > 8 else ""
    return (f"{len(others)} file{'s' if len(others) != 1 else ''} of other types not read ({kinds}{more}); "
            f"longretr reads {', '.join(sorted(SUFFIXES))}")


def is_index_folder(path: Path) -> bool:
    """A folder that `longretr index` has committed to (its manifest and its writer's lock file)."""
    return (path / "manifest.json").is_file() and (path / ".lock").is_file()


def check_root(root: Path | str) -> Path:
    """The corpus root as a Path, or a clear error if it is missing or not a file or folder."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if not root.is_file() and not root.is_dir():  # a FIFO or device: no documents, and so every indexed one "gone"
        raise ValueError(f"{root}: not a regular file or folder")
    return root


def read_corpus(root: Path | str, skipped: list[str] | None = None, progress: bool = False,
                others: list[Path] | None = None, empty: list[str] | None = None) -> Iterator[Document]:
    """Every document under root (a folder or a single file); unreadable files get one warning line
    and are appended to `skipped`, files that hold no text (NoText) to `empty` (to `skipped` if `empty` is None),
    files of other types in a folder to `others`. `progress` shows a bar over the files (PDFs take seconds each to
    read)."""
    root = check_root(root)
    files = [root] if root.is_file() else list(iter_files(root, skipped, others))
    base = root.parent if root.is_file() else root
    for path in tqdm(files, desc="reading", unit="file", disable=not progress, leave=False):
        try:
            yield from read_file(path, base)
        except SkipFile as e:
            warn(path, str(e))
            into = empty if isinstance(e, NoText) and empty is not None else skipped
            if into is not None:
                into.append(str(path))


def read_file(path: Path, base: Path) -> list[Document]:
    rel = path.relative_to(base).as_posix()
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:  # only a corpus given as one file gets here
        raise SkipFile(f"unsupported file type {suffix or '(no suffix)'}; "
                       f"expected one of {', '.join(sorted(SUFFIXES))}")
    if not encodes(rel):  # ids are stored as UTF-8 (Parquet, JSON) and typed back to `longretr rm`
        raise SkipFile("file name is not valid UTF-8; rename the file")
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # reading a FIFO or a device would block the run or never end
            raise SkipFile("not a regular file")
        limit = MAX_TABLE_BYTES if suffix in TABLE_SUFFIXES else MAX_FILE_BYTES
        if st.st_size > limit:
            raise SkipFile(f"file is {st.st_size / 2**20:.0f} MiB, over the {limit // 2**20} MiB limit"
                           f"{' for a table' if suffix in TABLE_SUFFIXES else ''}")
        raw = b"" if suffix == ".parquet" else path.read_bytes()  # pyarrow reads a Parquet file itself
    except FileNotFoundError as e:
        raise _not_found(path) from e
    except OSError as e:
        raise SkipFile(f"cannot read ({e.strerror or e})") from e
    if suffix in TEXT_SUFFIXES:
        text = _decode(raw)
        if not text.strip():
            raise NoText("empty file")
        return [Document(rel, text, _title(text, path) or path.stem, rel, text_sha256(text), st.st_size, st.st_mtime)]
    if suffix in HTML_SUFFIXES | PDF_SUFFIXES:
        text, title = _html_text(raw) if suffix in HTML_SUFFIXES else _pdf_text(raw)
        if not encodes(text + title):
            raise SkipFile("its text holds characters that are not valid UTF-8 (lone surrogates)")
        return [Document(rel, text, title or path.stem, rel, text_sha256(text), st.st_size, st.st_mtime)]
    # rows named as an editor counts them: a JSONL file's by line (blank lines too, as its JSON errors are)
    if suffix == ".jsonl":
        raw = _decode(raw)  # the bytes go before the rows are parsed (read one at a time), as the file's copies add up
    rows = _jsonl_rows(raw) if suffix == ".jsonl" else \
        [(f"row {n}", row) for n, row in enumerate(_parquet_rows(path), 1)]
    docs, ids = [], set()
    for where, row in rows:
        if not isinstance(row, dict) or "text" not in row or "id" not in row:
            raise SkipFile(f"{where} lacks the required 'id' and 'text' fields")
        doc_id, text, title = _row_fields(where, row)
        if not isinstance(title, str):  # a list or a table as title: the row keeps a title found in its text
            warn(f"{path} {where}", f"title must be a string or a number, got {_kind(title)}; titled from its text")
            title = ""
        if not isinstance(text, str):  # one bad row, like an empty one, skips only itself
            warn(f"{path} {where}", f"text must be a string, got {_kind(text)}")
            continue
        if not text.strip():
            warn(f"{path} {where}", "empty text")
            continue
        if not encodes(doc_id + text + title):  # JSON escapes can hold lone surrogates
            raise SkipFile(f"{where}: id, text or title holds characters that are not valid UTF-8 (lone surrogates)")
        if doc_id in ids:
            raise SkipFile(f"{where}: duplicate id {doc_id!r}")
        ids.add(doc_id)
        title = title or _title(text, Path(doc_id)) or name_title(doc_id)
        docs.append(Document(doc_id, text, title, f"{rel}#{doc_id}", text_sha256(text), len(text.encode()),
                             st.st_mtime))
    if not docs:
        raise NoText("no documents in file")
    return docs


def _row_fields(where: str, row: dict) -> tuple[str, object, object]:
    """A table row's id, text (as found; null: "") and title (a number as its string, "" for none, else as found),
    or SkipFile for an id that is not a string or a number (str() of a list or null would index an id the file never
    said). The caller skips a row whose text is not a string, or empty, and titles one whose title is neither."""
    doc_id, text, title = row["id"], row["text"], row.get("title")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, numbers.Number)):  # Number: a Parquet decimal too
        raise SkipFile(f"{where}: id must be a string or a number, got {_kind(doc_id)}")
    if not str(doc_id).strip():
        raise SkipFile(f"{where}: id must be a non-empty string or a number, got {doc_id!r}")
    if isinstance(title, numbers.Number) and not isinstance(title, bool):  # a year, an issue number: as before
        title = str(title)
    return str(doc_id), "" if text is None else text, "" if title is None else title


def _kind(value: object) -> str:
    """'int 123', 'NoneType None', 'list [1, 2]': a value's type and (the start of) its repr, for an error."""
    return f"{type(value).__name__} {value!r:.40}"


# What Windows Notepad and PowerShell write ("Unicode"): their text holds NUL bytes, so the BOM is checked before
# the binary test. UTF-32's BOMs first: UTF-32 LE's starts with UTF-16 LE's.
_BOMS = [(codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")]


def _decode(raw: bytes) -> str:
    wide = _sniff(raw)
    if wide is not None:
        return wide
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SkipFile(f"invalid UTF-8 at byte {e.start}") from e


def _sniff(raw: bytes) -> str | None:
    """The text of a file with a UTF-16 or UTF-32 BOM; None for other bytes, which hold no NUL (else SkipFile: binary).
    The BOM is checked first: UTF-16 text holds NUL bytes."""
    for bom, encoding in _BOMS:
        if raw.startswith(bom):
            return _decode_wide(raw, bom, encoding)
    if b"\x00" in raw[:8192]:
        raise SkipFile("binary file (NUL bytes)")
    return None


def _decode_wide(raw: bytes, bom: bytes, encoding: str) -> str:
    """The text after a UTF-16 or UTF-32 BOM, in that `encoding`. A binary file can start with those bytes too, and
    most byte pairs decode as UTF-16: NUL characters mark it binary, as NUL bytes do in UTF-8."""
    try:
        text = raw[len(bom):].decode(encoding)
    except UnicodeDecodeError as e:
        raise SkipFile(f"invalid {encoding.upper()} at byte {len(bom) + e.start} (after its BOM)") from e
    if "\x00" in text[:8192]:
        raise SkipFile(f"binary file (NUL characters after a {encoding.upper()} BOM)")
    return text


# Elements whose content no reader sees. <head> itself is not one: without </head> (HTML5 lets it out) html.parser
# nests the page's text in it. The `hidden` attribute is what the page author hid; CSS-hidden text (display:none) is
# kept, as search engines keep it: it is mostly tabs, menus and answers a script shows.
_INVISIBLE = ["script", "style", "noscript", "template", "title"]
# Elements that start a new line; inline ones (a, code, em, span...) stay inside their sentence.
_BLOCKS = ["address", "article", "aside", "blockquote", "caption", "dd", "div", "dl", "dt", "figcaption", "figure",
           "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre",
           "section", "table", "td", "th", "tr", "ul", "option", "textarea", "select", "svg"]
# A <meta> charset as browsers read it (WHATWG): a page cannot really be UTF-16 if its bytes say so in ASCII, and
# "latin-1" or "ascii" pages are windows-1252 (curly quotes in 0x93/0x94)
_CHARSET_AS = {"utf-16": "utf-8", "utf-16le": "utf-8", "utf-16be": "utf-8", "iso-8859-1": "windows-1252",
               "latin1": "windows-1252", "latin-1": "windows-1252", "ascii": "windows-1252",
               "us-ascii": "windows-1252"}
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _html_markup(raw: bytes) -> str:
    """An HTML file's text: by its BOM, else its declared charset, else UTF-8, else windows-1252 (what browsers
    assume; bs4's guess read Latin-1 pages as Czech). Bytes the charset cannot decode become U+FFFD, as in a browser;
    a page that is UTF-8 but for a stray byte stays UTF-8."""
    from bs4.dammit import EncodingDetector

    wide = _sniff(raw)
    if wide is not None:
        return wide
    raw = raw.removeprefix(codecs.BOM_UTF8)
    declared = (EncodingDetector.find_declared_encoding(raw, is_html=True) or "").lower()
    declared = _CHARSET_AS.get(declared, declared)
    try:
        codecs.lookup(declared or "utf-8")
    except LookupError:  # a charset Python does not know: as if none were declared
        declared = ""
    if declared:
        return raw.decode(declared, errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        mostly_utf8 = _UTF8_MULTIBYTE.search(raw) is not None  # windows-1252 text rarely holds a valid sequence
        return raw.decode("utf-8" if mostly_utf8 else "windows-1252", errors="replace")


def _html_text(raw: bytes) -> tuple[str, str]:
    """The visible text of an HTML page, one line per block element or <pre> line (other whitespace collapsed
    as a browser does), and its <title>."""
    from bs4 import BeautifulSoup, NavigableString  # imported here: most corpora have no HTML

    soup = BeautifulSoup(_html_markup(raw), "html.parser")
    # the page's <title>, not an <svg>'s tooltip
    found = next((t for t in soup.find_all("title") if not t.find_parent("svg")), None)
    title = " ".join(found.get_text().split()) if found else ""
    for tag in soup(_INVISIBLE):
        tag.decompose()
    for tag in soup.find_all(hidden=True):
        if tag.name not in ("html", "body") and str(tag.get("hidden")).lower() != "until-found":  # that one is found
            tag.decompose()
    for node in soup.find_all(string=True):
        if type(node) is NavigableString and not node.find_parent("pre"):
            node.replace_with(re.sub(r"\s+", " ", node))
    for tag in soup(_BLOCKS):
        tag.insert_before("\n")
        tag.append("\n")
    for tag in soup("br"):
        tag.replace_with("\n")
    lines = (line.strip() for line in soup.get_text().splitlines())
    text = "\n".join(line for line in lines if line)
    if not text:
        raise NoText("no visible text in the HTML")
    return text, title


_LINE_BREAK_HYPHEN = re.compile(r"(\w+)-\n(\w+)")


def _join_broken_words(text: str) -> str:
    """A word broken at a line's end ("inform-\nation") is one word again where the document has it whole elsewhere,
    or BM25 never finds it; else the hyphen stays and the line break goes ("long-\nterm" -> "long-term")."""
    words = set(re.findall(r"\w+", text.lower()))
    return _LINE_BREAK_HYPHEN.sub(
        lambda m: m[1] + m[2] if (m[1] + m[2]).lower() in words else f"{m[1]}-{m[2]}", text)


def _pdf_text(raw: bytes) -> tuple[str, str]:
    """The text of a PDF's pages (pypdf's extraction; pages separated by a blank line) and its /Title."""
    from pypdf import PdfReader  # imported here: most corpora have no PDFs

    # pypdf logs its own warnings about damaged files ("EOF marker not found"): lines on stderr without the file's
    # name, besides the one warning line a skipped file gets (its reason comes from the exception)
    log = logging.getLogger("pypdf")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SkipFile("encrypted PDF (it needs a password to open)")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        title = " ".join(str((reader.metadata.title if reader.metadata else None) or "").split())
    except SkipFile:
        raise
    except Exception as e:  # pypdf raises many types for damaged files
        raise SkipFile(f"not a readable PDF ({type(e).__name__}: {e})") from e
    finally:
        log.setLevel(level)
    text = _join_broken_words("\n\n".join(page for page in pages if page))
    if not text:
        raise NoText(f"no text in its {len(pages)} page(s) (a scanned PDF needs OCR first)")
    return text, title


def _jsonl_rows(text: str) -> Iterator[tuple[str, object]]:
    """("line N", the line's JSON value) for each non-blank line, one at a time: the lines and parsed rows of a large
    file are not all held at once."""
    # not splitlines(): JSON strings may hold U+2028 raw (never a raw CR or LF)
    for n, match in enumerate(_LINE.finditer(text), 1):
        line = match.group(1)
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as e:  # also: nested too deep, an integer of over 4,300 digits
            why = getattr(e, "msg", None) or f"{type(e).__name__}: {str(e)[:80]}"
            raise SkipFile(f"line {n}: invalid JSON ({why})") from e
        yield f"line {n}", row


_LINE = re.compile(r"([^\r\n]*)(?:\r\n?|\n|$)")


def _parquet_rows(path: Path) -> list[dict]:
    try:
        table = pq.read_table(path)
    except FileNotFoundError as e:
        raise _not_found(path) from e
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise SkipFile(f"not a readable Parquet file ({e})") from e
    missing = {"id", "text"} - set(table.column_names)
    if missing:
        raise SkipFile(f"missing column(s) {sorted(missing)}; has {table.column_names}")
    return table.to_pylist()


# ATX heading: the closing #s need a space before them ("# Learning C#" keeps its #), the text is not blank
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(\S.*?)(?:\s+#+)?\s*$")
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_FRONT_TITLE = re.compile(r"""^title:\s*(["']?)([^|>\s"'].*?)\1\s*$""")  # not '', not a multi-line value (| or >)
_ORG_TITLE = re.compile(r"^#\+title:\s*(\S.*?)\s*$", re.IGNORECASE)
_ORG_HEADLINE = re.compile(r"^\*+\s+(\S.*?)\s*$")
_ADOC_TITLE = re.compile(r"^=\s+(\S.*?)\s*$")


def _title(text: str, path: Path) -> str:
    """A text's own title: for Org, its #+TITLE or first headline; for AsciiDoc, its `= Title` line; else a YAML
    front matter's title, the first Markdown heading (outside a Markdown file's code fences) or RST heading (a line
    underlined by ===, ---, ...); "" if it has none."""
    lines = text.splitlines()[:200]
    suffix = path.suffix.lower()
    if suffix == ".org":  # "# ..." is an Org comment ("# -*- mode: org -*-"), not a heading
        for pattern in (_ORG_TITLE, _ORG_HEADLINE):
            found = next((m.group(1) for m in map(pattern.match, lines) if m), None)
            if found:
                return found
        return ""
    if suffix in (".adoc", ".asciidoc"):
        found = next((m.group(1) for m in map(_ADOC_TITLE.match, lines) if m), None)
        if found:
            return found
    if lines and lines[0].strip() == "---":  # YAML front matter (Jekyll, Hugo, MkDocs)
        for line in lines[1:]:
            if line.strip() in ("---", "..."):
                break
            m = _FRONT_TITLE.match(line)
            if m:
                return m.group(2)
    fenced, markdown = False, suffix in (".md", ".markdown")  # (in RST, ~~~ underlines a heading)
    for i, line in enumerate(lines):
        if markdown and _FENCE.match(line):
            fenced = not fenced
        if fenced:  # "# install deps" in a shell block is a comment
            continue
        m = _HEADING.match(line)
        if m:
            return m.group(1)
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if line.strip() and len(nxt.strip()) >= len(line.strip()) and re.fullmatch(r"([=\-~^*#+])\1+", nxt.strip()):
            return line.strip()
    return ""


def name_title(name: str) -> str:
    """A table row's title from its id: a file's name without its suffix ("docs/notes.md" -> "notes"); other ids
    whole ("arxiv:2301.12345", "10.1000/xyz.123"), where a stem would cut them."""
    path = PurePosixPath(name)
    return path.stem if path.suffix.lower() in SUFFIXES and path.stem else name


def text_sha256(text: str) -> str:
    """A document's sha256 column: what `longretr index` compares to find changed text, and the lexical index its
    reusable rows by."""
    return hashlib.sha256(text.encode()).hexdigest()
