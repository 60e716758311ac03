"""Writing outputs safely: free space checked before long stages, files replaced by temp-then-rename.

A stage that runs for minutes first estimates what it will write and refuses, in one line, when
the output's file system has less free space (:func:`check_free_space`): finding out at the end
of training would waste the work. Every file a stage writes goes to a temporary name in the same
directory and is renamed over the target when whole (:func:`atomic_write`), so a crash, a kill or
a full disk leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

from phonecli.errors import DiskSpaceError

#: headroom on top of an estimate (file-system blocks, metadata, estimation error)
SPACE_MARGIN = 1.1


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent); None for URLs.

    A read-only file system is an ``OSError(EROFS)`` naming ``path``: it has no room for anything.
    """
    if "://" in str(path):
        return None
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    st = os.statvfs(p)
    if st.f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
    return st.f_bavail * st.f_frsize


def check_free_space(path: str | Path, need: int, what: str) -> None:
    """Refuse (:class:`~phonecli.errors.DiskSpaceError`) when ``path``'s file system has less than
    ``need`` bytes (times :data:`SPACE_MARGIN`) free. ``what`` names the output in the message."""
    free = free_bytes(path)
    if free is not None and need * SPACE_MARGIN > free:
        raise DiskSpaceError(f"{path}: {what} needs about {_mb(need * SPACE_MARGIN)} but only {_mb(free)} is free "
                             "there; free space or choose another output location")


@contextlib.contextmanager
def os_errors(path: str | Path):
    """Let an I/O failure while writing ``path`` surface as an ``OSError`` naming ``path``.

    safetensors reports a full disk as ``SafetensorError("... (os error 28)")`` and Python's own
    writes raise ``OSError`` without a file name; the CLI turns an ``OSError`` with an errno into one
    line naming the path and the fix, so both are normalised here. Anything else passes unchanged.
    """
    from safetensors import SafetensorError

    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno is not None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except SafetensorError as e:
        m = re.search(r"os error (\d+)", str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), str(path)) from e


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with os_errors(path):
            write(tmp)
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_csv(path: str | Path, fieldnames: list[str], rows: list[dict]) -> Path:
    """A CSV with a header row and one row per dict, written temp-then-rename."""
    import csv

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fieldnames)
            w.writeheader()
            w.writerows(rows)

    return atomic_write(path, write)


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"
