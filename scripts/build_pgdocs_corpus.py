"""Build the PostgreSQL-manual known-item corpus: 300 long HTML pages of Debian's postgresql-doc-15.

A second demo corpus, unlike the pydoc one and in no training data: long technical documents (the
300 pages with the most visible words, about 1,000 to 19,000 words each) from the PostgreSQL 15
manual. `tests/data/pgdocs_pages.txt` lists them, so the corpus is the same on every machine with the
package; `tests/data/pgdocs_queries.jsonl` asks about 70 of them in plain language.

    apt-get update && apt-get install postgresql-doc-15    # the list is from 15.20-0+deb12u1
    .venv/bin/python scripts/build_pgdocs_corpus.py            # writes data/pgdocs/*.html
    .venv/bin/python scripts/compare_modes.py --index indexes/pgdocs --corpus data/pgdocs \
        --queries tests/data/pgdocs_queries.jsonl --out runs/pgdocs

`--select` picks the pages afresh (the list file is rewritten) instead of reading the list.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from longretr.corpus import read_file  # noqa: E402

SOURCE = Path("/usr/share/doc/postgresql-doc-15/html")
PAGES = REPO / "tests/data/pgdocs_pages.txt"


def select(source: Path, n: int) -> list[str]:
    """The n pages with the most words of visible text, ties by name."""
    words = {p.name: len(read_file(p, source)[0].text.split()) for p in source.glob("*.html")}
    return sorted(sorted(words, key=lambda name: (-words[name], name))[:n])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=SOURCE)
    ap.add_argument("--out", type=Path, default=REPO / "data/pgdocs")
    ap.add_argument("--select", type=int, metavar="N", help="choose the N longest pages and rewrite the list")
    args = ap.parse_args()
    if not args.source.is_dir():
        sys.exit(f"{args.source}: not found; install Debian's postgresql-doc-15 (apt-get install postgresql-doc-15)")
    if args.select:
        names = select(args.source, args.select)
        PAGES.write_text("".join(f"{name}\n" for name in names))
    names = PAGES.read_text().split()
    missing = [name for name in names if not (args.source / name).is_file()]
    if missing:
        sys.exit(f"{args.source}: {len(missing)} listed pages missing (first: {missing[0]}); "
                 "the list was taken from postgresql-doc-15 15.20-0+deb12u1: apt-get update, then install it again")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(args.source / name, args.out / name)
    print(f"{args.out}: {len(names)} pages from {args.source}")


if __name__ == "__main__":
    main()
