"""A file written whole or not at all (a temp file beside it, then a rename), by the index and by commands' output
files. No torch or faiss here: `longretr search --server --output` uses it too."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`path` whole or not at all. A failed write (a full disk) leaves no temp file behind and raises an OSError
    naming `path`, not its temp file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from e
