"""Writing the user's files safely: outputs checked before anything is written, every file
written whole or not at all.

A file is written under a temporary name in its own folder and renamed over the target, so an
interrupted or failed write leaves the earlier file as it was; the temporary is removed on any
failure (a kill -9 can leave it, and the next write of the same file replaces it).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from respmatch.errors import RespmatchError

TEMPORARY_SUFFIX = ".respmatch-tmp"


def temporary_path(path: str | os.PathLike) -> Path:
    """Where ``path`` is written before it is renamed into place."""
    path = Path(path)
    return path.with_name(path.name + TEMPORARY_SUFFIX)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` (flushed to disk first),
    on any failure, Ctrl-C included, it is removed and ``path`` is left as it was."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())  # a full disk shows at the latest here, not after the rename
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # the one line then names the file (a failed rename has none)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save, atomically.  Serialised in memory first: torch's own file writer reports a
    full disk as an obscure RuntimeError ('unexpected pos'), Python's as OSError(ENOSPC)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def check_output(
    path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), option: str = "--out"
) -> Path:
    """Refuse an output path that cannot be written or that is one of the inputs, before any
    work is done or any file created."""
    path = Path(path)
    if path.is_dir():
        raise RespmatchError(f"{option} {path}: is a folder; give a file name")
    _check_folder(path, option)
    for source in inputs:
        if path.exists() and Path(source).exists() and os.path.samefile(path, source):
            raise RespmatchError(
                f"{option} {path}: is the input {source}; writing it would destroy the input, "
                "choose another name"
            )
    return path


def check_output_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that is a file, or that can neither be written
    nor created (its parent must exist: a mistyped path is not silently made)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RespmatchError(f"{option} {path}: is a file, not a folder; give a folder")
    if path.is_dir() and not os.access(path, os.W_OK):
        raise RespmatchError(f"{option} {path}: the folder is not writable")
    if not path.is_dir():
        _check_folder(path, option)
    return path


def _check_folder(path: Path, option: str) -> None:
    """The folder that will hold ``path`` exists and is writable."""
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise RespmatchError(f"{option} {path}: the folder {folder} {what}; create it first")
    if not os.access(folder, os.W_OK):
        raise RespmatchError(f"{option} {path}: the folder {folder} is not writable")
