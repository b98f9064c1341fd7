"""Opening a run database, and the one writer lock of a run.

A plain path is an SQLite file, a URL (``postgresql://…``) goes to ``ase.db.connect`` as it is.
Before ASE touches a file, ``classify`` says what the file is, without writing a byte:

- ``"new"``: missing, empty, or an SQLite file with no tables at all (what a run killed in its
  first instant leaves): a writer makes its tables, a reader finds no run in it;
- ``"ase"``: an SQLite file holding ASE's tables: a run, to be checked by the reader;
- anything else (a folder, another program's SQLite database, a file that is not SQLite) is
  refused with one line, for reading and for writing alike.

No ASE lock file: SQLite locks and commits on its own, while the lock file of a writer killed
mid-write would stay behind and make every later write wait forever.

One writer per run, enforced by the database itself (``WriterLock``): a writer holds the one row
of the ``respmatch_writer`` table (a second writer's insert fails and it is refused), and a unique
index on the run index makes a second row for a stored index impossible.  The row names the
writer's host and process, so a writer that was killed leaves a lock that the next writer on that
host sees to be stale and takes over.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import uuid
import weakref
from datetime import datetime, timezone
from pathlib import Path

import ase.db
import psutil

from respmatch.errors import RespmatchError
from respmatch.files import is_sqlite, sqlite_tables, temporary_path


def is_url(name: str | Path) -> bool:
    return "://" in str(name)


def classify(path_or_url: str | Path) -> str:
    """"url", "new" or "ase" (module docstring); anything else is refused here."""
    name = str(path_or_url)
    if is_url(name):
        return "url"
    path = Path(name)
    if path.is_dir():
        raise RespmatchError(f"{name}: is a folder, not a run database; give a file name")
    if not path.exists() or not path.stat().st_size:
        return "new"
    if not is_sqlite(path):
        raise RespmatchError(f"{name}: not a run database (SQLite); choose another file")
    tables = sqlite_tables(path)
    if tables is None:
        raise RespmatchError(f"{name}: a damaged SQLite file, not a run database")
    if not tables:
        return "new"
    if "systems" not in tables:
        raise RespmatchError(f"{name}: an SQLite database, but not a run database (no ASE tables); choose another file")
    return "ase"


def create_tables(path: str | Path) -> None:
    """Give a new run file ASE's tables whole: made in a temporary file and renamed into place,
    so a run killed in its first instant leaves no file or a whole one (ASE commits its tables
    one by one, and a kill between them left a file that no later run could open)."""
    temporary = temporary_path(path)
    temporary.unlink(missing_ok=True)
    ase.db.connect(temporary, type="db", use_lock_file=False).count()  # ASE makes its tables on first use
    os.replace(temporary, path)


def connect(path_or_url: str | Path):
    """ASE's connection to a database ``classify`` accepted."""
    name = str(path_or_url)
    if is_url(name):
        return ase.db.connect(name)
    return ase.db.connect(name, type="db", use_lock_file=False)


class RunInUseError(FileExistsError):
    """Another process is writing this run."""


_LOCK_TABLE = "CREATE TABLE IF NOT EXISTS respmatch_writer (name TEXT PRIMARY KEY, host TEXT, pid INTEGER, process_started REAL, token TEXT)"
# ASE keeps integer key-value pairs in number_key_values: at most one row of the run per index.
_UNIQUE_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS respmatch_one_row_per_index ON number_key_values(value) WHERE key = 'index'"


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _holder_gone(host: str, pid: int, process_started: float) -> bool:
    """A lock is stale when its process, on this host, has ended (or its pid now names another
    process).  A writer on another host cannot be checked from here, so it counts as alive."""
    if host != socket.gethostname():
        return False
    started = _process_started(pid)
    return started is None or abs(started - process_started) > 1.0


def _release(filename: str, token: str) -> None:
    con = sqlite3.connect(filename, timeout=60)
    try:
        with con:
            con.execute("DELETE FROM respmatch_writer WHERE token = ?", (token,))
    finally:
        con.close()


class WriterLock:
    """The run's writer lock on an SQLite run file whose ASE tables exist, held from ``acquire``
    until ``release`` (or the end of a ``with`` block, or of the process)."""

    def __init__(self, filename: str | Path):
        self.filename = str(filename)
        self._release = None

    def acquire(self) -> WriterLock:
        """Take the writer row, or raise RunInUseError naming its live holder.  The unique index
        on the run index is made in the same transaction."""
        token = uuid.uuid4().hex
        me = (socket.gethostname(), os.getpid(), _process_started(os.getpid()), token)
        con = sqlite3.connect(self.filename, timeout=60, isolation_level=None)
        try:
            con.execute(_LOCK_TABLE)
            con.execute("BEGIN IMMEDIATE")  # one writer at a time between reading the row and taking it
            held = con.execute("SELECT host, pid, process_started FROM respmatch_writer").fetchone()
            if held is not None and not _holder_gone(*held):
                con.execute("ROLLBACK")
                host, pid, started = held
                since = datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
                raise RunInUseError(
                    f"{self.filename}: another process is writing this run (pid {pid} on {host}, started "
                    f"{since}); wait for it to end, or if it is gone for good, "
                    f"sqlite3 {self.filename} 'DELETE FROM respmatch_writer'"
                )
            con.execute("DELETE FROM respmatch_writer")
            con.execute("INSERT INTO respmatch_writer VALUES ('writer', ?, ?, ?, ?)", me)
            try:
                con.execute(_UNIQUE_INDEX)
            except sqlite3.IntegrityError:
                con.execute("ROLLBACK")
                raise RespmatchError(f"{self.filename}: holds some structure index twice (a damaged run)") from None
            con.execute("COMMIT")
        finally:
            con.close()
        self._release = weakref.finalize(self, _release, self.filename, token)
        return self

    @property
    def held(self) -> bool:
        return self._release is not None and self._release.alive

    def release(self) -> None:
        if self._release is not None:
            self._release()

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
