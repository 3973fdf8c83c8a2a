"""Files written whole or not at all: a temporary file, fsync'ed, renamed into place.

Checkpoints, the run's JSON files and figures all go through ``atomic_write``, so a
kill at any moment leaves either the old file or the complete new one under the final
name, never half of one (a stale temporary at worst, removed by the next run).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "remove_stale_temporaries", "save_json"]


def atomic_write(path, write: Callable) -> Path:
    """Write a file so that ``path`` is either the old file or the complete new one.

    ``write(f)`` writes into a temporary file (binary mode) in the same directory;
    it is flushed, fsync'ed and renamed over ``path`` with ``os.replace`` (atomic on
    POSIX and Windows within one filesystem). On any error, Ctrl-C included, the
    temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            err.filename = str(path)  # a failed write() (disk full) names no file: say which one
        raise
    _fsync_directory(path.parent)     # make the rename itself durable
    return path


# the temporary names mkstemp gives in atomic_write: "." + final name + "." + 8 characters + ".tmp"
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(directory) -> list[Path]:
    """Delete the temporary files that ``atomic_write`` left in ``directory`` when its process
    was killed (``kill -9`` skips its cleanup). Only safe while no other process writes there,
    i.e. under the run directory's lock. Returns the paths removed."""
    directory = Path(directory)
    stale = [p for p in directory.glob(".*.tmp") if _TEMPORARY.fullmatch(p.name) and p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_json(path, data) -> Path:
    """Write ``data`` as indented JSON, atomically (see ``atomic_write``)."""
    text = json.dumps(data, indent=2) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))
