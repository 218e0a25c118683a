"""Build the demo corpus from text every Python installation has: the pydoc pages of standard
library modules (real long technical documents, hundreds to tens of thousands of tokens)."""

from __future__ import annotations

import importlib
import importlib.util
import io
import os
import pkgutil
import pydoc
import re
import shutil
import sys
import sysconfig
import tempfile
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

# Modules whose import has side effects (opens windows, prints, starts things) or is deprecated noise.
_SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "lib2to3", "pydoc_data",
         "ensurepip", "venv", "xxsubtype", "xxlimited", "xxlimited_35", "msilib", "winreg", "winsound",
         "_msi", "nt", "msvcrt", "_winapi", "__phello__", "__hello__", "_testcapi", "test"}


def stdlib_modules() -> list[str]:
    """Top-level modules first, then the public submodules of packages (email.mime, json.decoder...)."""
    top = sorted(n for n in sys.stdlib_module_names if not n.startswith("_") and n not in _SKIP)
    subs = []
    for name in top:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for info in pkgutil.iter_modules(spec.submodule_search_locations):
            if not info.name.startswith("_") and info.name not in ("test", "tests", "__main__"):
                subs.append(f"{name}.{info.name}")
    return top + sorted(subs)


def _from_stdlib(module) -> bool:
    """Built in, or loaded from the standard library's folders (not site-packages: setuptools puts its own
    distutils in place of the standard library's)."""
    file = getattr(module, "__file__", None)
    if file is None:
        return module.__name__.split(".")[0] in sys.builtin_module_names
    roots = {Path(sysconfig.get_paths()[k]).resolve() for k in ("stdlib", "platstdlib")}
    path = Path(file).resolve()
    return not any(part == "site-packages" for part in path.parts) and any(path.is_relative_to(r) for r in roots)


def _render(module) -> str:
    """The module's pydoc page, the same on every run and free of this process's state: os.environ is shown as
    `environ({...})` (a default argument like cgi's `environ=os.environ` put the whole environment, tokens and keys
    included, into the page), sys.argv as ['python'], and no object's memory address (`<... at 0x7f...>`: a page
    that changes on every run is re-encoded by every `longretr index`)."""
    environ_repr, argv = os._Environ.__repr__, sys.argv
    os._Environ.__repr__, sys.argv = lambda self: "environ({...})", ["python"]
    try:
        text = pydoc.render_doc(module, title="%s", renderer=pydoc.plaintext)
    finally:
        os._Environ.__repr__, sys.argv = environ_repr, argv
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", text)
    return re.sub(r"(<\w+ '[^']*', handle )[0-9a-f]+>", r"\1...>", text)  # ctypes' loaded libraries


def build(out: Path, limit: int = 300) -> int:
    """Write up to `limit` module pages as out/<module>.txt (title line first); return the count.

    The pages are written to a temporary folder beside `out` and moved in at the end, so an interrupted run leaves
    `out` as it was. `out` may be new, empty, or an earlier demo corpus (its pages not written this time are
    removed, so it holds exactly this run's pages); a folder holding anything else is refused (ValueError)."""
    if limit < 1:
        raise ValueError(f"--limit must be at least 1, got {limit}")
    names = stdlib_modules()
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: not a folder")
    pages = {f"{n}.txt" for n in names}
    old = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    foreign = [n for n in old if n not in pages]
    if foreign:
        raise ValueError(f"{out}: not empty and not a demo corpus (holds {', '.join(foreign[:3])}"
                         f"{', ...' if len(foreign) > 3 else ''}); give a new or empty folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as e:
        raise ValueError(f"{out}: cannot write there ({e.strerror or e})") from e
    try:
        written = []
        for name in names:
            if len(written) >= limit:
                break
            try:
                with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    module = importlib.import_module(name)
                    text = _render(module) if _from_stdlib(module) else ""
            except Exception:  # platform-specific or broken modules are simply not in the demo
                continue
            if len(text) < 500:
                continue
            (tmp / f"{name}.txt").write_text(f"# {name}\n\n{text}")
            written.append(f"{name}.txt")
        if not out.is_dir():
            tmp.rename(out)  # atomic: the folder appears complete or not at all
        else:
            for page in written:
                (tmp / page).replace(out / page)
            for stale in set(old) - set(written):
                (out / stale).unlink()
    except OSError as e:
        raise ValueError(f"{out}: cannot write there ({e.strerror or e})") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(written)


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    count = build(target, int(sys.argv[2]) if len(sys.argv) > 2 else 300)
    print(f"wrote {count} stdlib documentation pages to {target}/")
