"""Build the demo corpus from text every Python installation has: the pydoc pages of standard
library modules (real long technical documents, hundreds to tens of thousands of tokens)."""

from __future__ import annotations

import importlib
import importlib.util
import io
import pkgutil
import pydoc
import sys
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


def build(out: Path, limit: int = 300) -> int:
    """Write up to `limit` module pages as out/<module>.txt (title line first); return the count."""
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for name in stdlib_modules():
        if written >= limit:
            break
        try:
            with warnings.catch_warnings(), redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
                text = pydoc.render_doc(module, title="%s", renderer=pydoc.plaintext)
        except Exception:  # platform-specific or broken modules are simply not in the demo
            continue
        if len(text) < 500:
            continue
        page = f"# {name}\n\n{text}"
        tmp = out / f".{name}.txt.tmp"
        tmp.write_text(page)
        tmp.replace(out / f"{name}.txt")
        written += 1
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    count = build(target, int(sys.argv[2]) if len(sys.argv) > 2 else 300)
    print(f"wrote {count} stdlib documentation pages to {target}/")
