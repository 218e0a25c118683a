"""How the repository's study scripts end on a missing file or index: one line naming it, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def run(main: Callable[[], object]) -> None:
    from .store import IndexFolderError

    try:
        main()
    except (OSError, IndexFolderError) as e:  # a missing index, query file or data/train
        sys.exit(f"{Path(sys.argv[0]).name}: error: {e}")
