"""Copy each results table into the pages that show it, so that no number is typed twice.

A page (README.md, or any page in docs/) marks where a table goes with two comments:

    <!-- include benchmarks/results/finetune.md -->
    ... the file's text, copied here by this script ...
    <!-- end include -->

The path is relative to the repository's root. The file is written by the script that
measured it (``--table`` writes it again from the saved results without measuring), so a
page's numbers are the script's, never retyped.

    python docs/include.py            # copy every table into its pages
    python docs/include.py --check    # only list the blocks that differ (what tests/test_docs.py asks)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"(<!-- include (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- end include -->)", re.S)
OPENING = re.compile(r"<!-- include (\S+) -->")


def pages(root: Path = ROOT) -> list[Path]:
    """The pages that may include tables: the README and every page in docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def blocks(page: Path, root: Path = ROOT) -> list[tuple[str, str, str]]:
    """(included path, the block's text on the page, the file's text) of every block of a page.

    A marker without its end, or one that names a missing file, is a ValueError naming both.
    """
    text = page.read_text()
    found = list(BLOCK.finditer(text))
    opened = OPENING.findall(text)
    if len(opened) != len(found):
        unclosed = [path for path in opened if path not in {m["path"] for m in found}] or opened
        raise ValueError(f"{page}: an include marker without its '<!-- end include -->' "
                         f"(expected one after each opening, found {len(found)} of {len(opened)}: "
                         f"{', '.join(unclosed)})")
    out = []
    for match in found:
        source = root / match["path"]
        if not source.is_file():
            raise ValueError(f"{page}: included file {match['path']} does not exist "
                             f"(expected a file relative to {root})")
        out.append((match["path"], match["body"], source.read_text()))
    return out


def stale(root: Path = ROOT) -> list[str]:
    """'page: path' for every block whose text differs from its file."""
    return [f"{page.relative_to(root)}: {path}" for page in pages(root)
            for path, body, wanted in blocks(page, root) if body != wanted]


def include(page: Path, root: Path = ROOT) -> bool:
    """Copy every included file into its block of ``page``; True if the page changed."""
    blocks(page, root)                       # refuse a missing file or an unclosed marker first
    text = page.read_text()
    new = BLOCK.sub(lambda m: m.group(1) + (root / m["path"]).read_text() + m.group(4), text)
    if new != text:
        page.write_text(new)
    return new != text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing: list the stale blocks")
    args = parser.parse_args(argv)
    if args.check:
        differ = stale()
        print("\n".join(differ) if differ else "every included block is up to date")
        return 1 if differ else 0
    for page in pages():
        if include(page):
            print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
