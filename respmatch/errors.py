"""Expected faults, and the one line the command line prints for each.

A fault the user can fix (bad input, a bad option, a full disk, no CUDA) is reported as one line
naming what failed and what to do, with exit code 2; anything else is a bug and keeps its
traceback.  Modules raise ``RespmatchError`` (or ``StructureError``, a subclass) for the first
kind, so the command line never has to guess from a message.
"""

from __future__ import annotations

import errno
import sqlite3


class RespmatchError(ValueError):
    """Input, option or file the user can fix; the message says what failed and what to do.

    A ValueError, so code written against the Python API before this type existed still
    catches it.
    """


class RespmatchWarning(UserWarning):
    """Input that works but is probably not what the user meant; shown as one line."""


# What to do about an OS fault, by errno.
_OS_ADVICE = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space (quota exceeded)",
    errno.EFBIG: "the file grew past the size this process may write; free space or lift the limit",
    errno.EACCES: "check the permissions or choose another path",
    errno.EPERM: "check the permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose a writable path",
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file name, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def describe(error: BaseException) -> str | None:
    """The one line for an expected fault, or None for an unexpected one (a bug)."""
    if isinstance(error, RespmatchError):
        return str(error)
    if isinstance(error, OSError):
        if error.strerror is None:  # raised with a message of ours
            return str(error)
        where = error.filename if error.filename is not None else "file"
        advice = _OS_ADVICE.get(error.errno)
        return f"{where}: {error.strerror}" + (f" ({advice})" if advice else "")
    if isinstance(error, sqlite3.OperationalError):  # full or read-only disk under a database
        return f"run database: {error} (free some disk space or choose a writable --out)"
    return None
