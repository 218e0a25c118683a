"""A file written whole or not at all (a temp file beside it, then a rename), by the index and by commands' output
files. No torch or faiss here: `longretr search --server --output` uses it too."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import BinaryIO


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """`path` holding `data`, whole or not at all (atomic_write)."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`path` whole or not at all, also after a power loss, as `write` writes it to an open file (streamed: a large
    index file is not built in memory first). The data is on disk before the rename, the rename before this returns.
    A failed write (a full disk) leaves no temp file behind and raises an OSError naming `path`, not its temp file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:  # Ctrl-C or SIGTERM mid-write too: no half-written temp file stays behind
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise


def fsync_dir(folder: Path) -> None:
    """Put the renames in `folder` on disk: until the folder itself is synced, a power loss may undo one (the file
    system orders them in its journal at best). File systems that cannot sync a folder say so with EINVAL or ENOTSUP
    and are skipped; any other failure is raised."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
