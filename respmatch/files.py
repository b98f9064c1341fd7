"""Writing the user's files safely: outputs checked before anything is written, every file
written whole or not at all.

A file is written under a temporary name in its own folder and renamed over the target, so an
interrupted or failed write leaves the earlier file as it was; the temporary is removed on any
failure (a kill -9 can leave it, and the next write of the same file replaces it).
"""

from __future__ import annotations

import contextvars
import io
import json
import os
import sqlite3
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


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
    import torch  # here: a command that saves no model need not load torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


# The kinds of file a command writes, each with how an existing file of that kind is recognised.
# An existing output is replaced only when it is of the kind the command writes (an earlier
# result of the same command), when it is empty, or when the user says --force; a run database
# is opened and extended, never replaced, so --force does not apply to it.


def is_sqlite(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(16) == b"SQLite format 3\x00"


def sqlite_tables(path: Path) -> set[str] | None:
    """The table names of an existing SQLite file; None when it cannot be read as SQLite.  A
    query writes nothing (except that SQLite rolls back what a killed writer left half-done, as
    any reader must)."""
    connection = sqlite3.connect(path)
    try:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError:
        return None
    finally:
        connection.close()


def is_run_database(path: Path) -> bool:
    """ASE's tables, or no table at all (a run killed in its first instant left the file)."""
    tables = sqlite_tables(path) if is_sqlite(path) else None
    return tables is not None and (not tables or "systems" in tables)


def _is_structure_file(path: Path) -> bool:
    from ase.io import read

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read(path, index=0)
    except Exception:  # any reader fault: it is not a structure file ASE reads
        return False
    return True


def _is_json_object(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_bytes()), dict)
    except (ValueError, UnicodeDecodeError):
        return False


# Leading bytes of the figure formats a plot is written in (matplotlib's, those we recognise).
_FIGURE_SIGNATURES = (b"\x89PNG", b"%PDF", b"%!PS", b"<?xml", b"<svg", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"RIFF")


def _is_figure(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(8).startswith(_FIGURE_SIGNATURES)


def _is_report(path: Path) -> bool:
    with path.open("rb") as file:
        return b'<meta name="generator" content="respmatch report">' in file.read(4096)


@dataclass(frozen=True)
class Kind:
    """A kind of file a command writes: its name in messages, how an existing one is known."""

    name: str
    recognise: Callable[[Path], bool]
    replaceable: bool = True  # False: opened and extended in place, so --force cannot apply


KINDS = {
    "run database": Kind("run database", is_run_database, replaceable=False),
    "model": Kind("respmatch model", zipfile.is_zipfile),
    "structures": Kind("structure file", _is_structure_file),
    "json": Kind("JSON file", _is_json_object),
    "figure": Kind("figure", _is_figure),
    "report": Kind("respmatch report", _is_report),
    "folder": Kind("folder", Path.is_dir),
}

# Paths the user allowed to be replaced whatever they hold (--force), for the command running now.
_forced: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("forced", default=frozenset())


@contextmanager
def replacing(paths: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Within this block, the files at ``paths`` may be replaced whatever they hold (--force)."""
    token = _forced.set(_forced.get() | {os.path.realpath(p) for p in paths})
    try:
        yield
    finally:
        _forced.reset(token)


def check_output(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike] = (),
    option: str = "--out",
    kind: str | None = None,
) -> Path:
    """Refuse, before any work is done or any file created, an output path that cannot be
    written, that is one of the inputs (by real path: symlinks and ``./x`` count), or that
    holds a file of another kind than ``kind`` (see KINDS)."""
    path = Path(path)
    if kind == "folder":
        return check_output_folder(path, option)
    if path.is_dir():
        raise RespmatchError(f"{option} {path}: is a folder; give a file name")
    _check_folder(path, option)
    real = os.path.realpath(path)
    for source in inputs:
        if "://" not in str(source) and os.path.realpath(source) == real:
            raise RespmatchError(
                f"{option} {path}: is the input {source}; writing it would destroy the input, "
                "choose another name"
            )
    if kind is not None and path.is_file() and path.stat().st_size:
        known = KINDS[kind]
        if not known.recognise(path) and (not known.replaceable or real not in _forced.get()):
            advice = "choose another file" if not known.replaceable else "choose another name, or add --force to replace it"
            raise RespmatchError(f"{option} {path}: exists and is not a {known.name}; not overwriting it ({advice})")
    return path


def check_files(
    inputs: Iterable[tuple[str, str | os.PathLike]],
    outputs: Iterable[tuple[str, str | os.PathLike, str]],
) -> None:
    """The one check of a command's files, before any work: ``inputs`` as (option, path),
    ``outputs`` as (option, path, kind).  No output may be an input or another output (by real
    path), and each must be writable and of its kind (``check_output``)."""
    inputs = [(option, path) for option, path in inputs if path is not None]
    outputs = [(option, path, kind) for option, path, kind in outputs if path is not None]
    seen: dict[str, str] = {}
    for option, path, kind in outputs:
        if "://" in str(path):
            continue  # a database server's URL: no file of ours
        real = os.path.realpath(path)
        if real in seen:
            raise RespmatchError(f"{option} {path}: is also the file of {seen[real]}; give each output its own name")
        seen[real] = option
        check_output(path, [source for _, source in inputs], option, kind)


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
