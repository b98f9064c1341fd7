"""Results store of a random-structure-search run, kept in an ASE database.

Every structure is written, and committed, the moment it finishes (or with the rest of its
chunk, on a cluster), so a run killed at any moment loses only the structures in flight; a
resumed run reads back which indices are stored and skips them.  The run parameters (model
checksum included) live in the database metadata, so a resume can refuse to mix structures from
a different run into the same file.

One writer per run, enforced by the database itself: a writer holds the one row of the
``respmatch_writer`` table (a second writer's insert fails and it is refused), and a unique index
on the run index makes a second row for a stored index impossible.  The row names the writer's
host and process, so a writer that was killed leaves a lock that the next writer on that host
sees to be stale and takes over.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import uuid
import weakref
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import ase.db
import numpy as np
import psutil
from ase import Atoms
from ase.db.sqlite import SQLite3Database
from ase.io import write as ase_write

from respmatch.config import parameter_differences
from respmatch.errors import RespmatchError
from respmatch.files import atomic_path, check_output
from respmatch.record import RECORD_KEYS, Record

# Parameters that may differ between a run and its resumption; n may only grow (extend a run).
RESUME_MAY_CHANGE = frozenset({"batch_size", "device", "threads", "n", "model"})

# Per-structure results of ``respmatch recheck`` (a physical potential's verdict), when present;
# the relaxed structure itself is kept in the row's data (relaxed_positions, relaxed_cell).
RECHECK_KEYS = (
    "physical_potential", "physical_version", "physical_energy_per_atom", "physical_fmax",
    "physical_error", "relaxed_energy_per_atom", "relax_steps", "relax_converged",
    "relax_rms_displacement", "relax_survived", "recheck_relax", "recheck_fmax", "recheck_max_steps",
)

EXPORT_FORMATS = {".cif": "cif", ".extxyz": "extxyz", ".xyz": "extxyz"}

def _connect(path_or_url: str | Path):
    """Open the database: URLs (postgresql://...) pass through, any plain path is SQLite.

    No ASE lock file for SQLite: SQLite locks and commits on its own, while the lock file of a
    writer killed mid-write would stay behind and make every later write wait forever.
    """
    name = str(path_or_url)
    if "://" in name:
        return ase.db.connect(name)
    path = Path(name)
    if path.is_dir():
        raise RespmatchError(f"{name}: is a folder, not a run database; give a file name")
    if path.is_file() and path.stat().st_size and not _is_sqlite(path):
        raise RespmatchError(f"{name}: not a run database (SQLite); choose another file")
    return ase.db.connect(name, type="db", use_lock_file=False)


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(16) == b"SQLite format 3\x00"


def open_existing(path_or_url: str | Path):
    """An existing database, to read.  ``ase.db.connect`` would create a missing file and write
    its tables into an empty file or any other SQLite database: the user's input would change."""
    name = str(path_or_url)
    path = Path(name)
    if "://" in name or path.is_dir():
        return _connect(name)
    if not path.is_file():
        raise FileNotFoundError(f"{name}: no such run database")
    if not path.stat().st_size:
        raise RespmatchError(f"{name}: empty file, not a run database")
    if _is_sqlite(path) and not _has_ase_tables(path):
        raise RespmatchError(f"{name}: an SQLite database, but not a run database (no ASE tables)")
    return _connect(name)


def _has_ase_tables(path: Path) -> bool:
    """Whether the SQLite file holds ASE's tables.  A query writes nothing (except that SQLite
    rolls back what a killed writer left half-done, as any reader must)."""
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'systems'").fetchone()[0] > 0
    except sqlite3.DatabaseError:
        return False
    finally:
        con.close()


def _plain(value):
    """JSON-ready copy (tuples, arrays → lists; numpy scalars → Python) so values round-trip."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _run_id(parameters: dict) -> str:
    """Short id of the run, stable across resumes (keys that may change are left out).

    Prefixed with 'r' because ASE refuses string values that parse as numbers (e.g. '1234e567').
    """
    defining = {k: v for k, v in parameters.items() if k not in RESUME_MAY_CHANGE}
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()
    return "r" + digest[:12]


def _check_resume(path: str, stored: dict, given: dict) -> None:
    """Refuse to resume with parameters that define a different run, or with a smaller n."""
    details = parameter_differences(stored, given, RESUME_MAY_CHANGE)
    if details:
        raise RespmatchError(f"{path}: cannot resume, the run parameters differ: {details}")
    if "n" in stored and "n" in given and given["n"] < stored["n"]:
        raise RespmatchError(
            f"{path}: cannot resume with n={given['n']}: the run asks for n={stored['n']} "
            "structures and n may only grow"
        )


def _sorted_rows(db) -> Iterator:
    """Rows of the run (those with an 'index' key), sorted by index."""
    return db.select("index", sort="index")


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


def _acquire_writer(filename: str) -> str:
    """Take the run's writer row, or raise RunInUseError naming its live holder; the lock's token.

    The unique index on the run index is made in the same transaction (ASE made its tables when
    the store opened the file)."""
    token = uuid.uuid4().hex
    me = (socket.gethostname(), os.getpid(), _process_started(os.getpid()), token)
    con = sqlite3.connect(filename, timeout=60, isolation_level=None)
    try:
        con.execute(_LOCK_TABLE)
        con.execute("BEGIN IMMEDIATE")  # one writer at a time between reading the row and taking it
        held = con.execute("SELECT host, pid, process_started FROM respmatch_writer").fetchone()
        if held is not None and not _holder_gone(*held):
            con.execute("ROLLBACK")
            host, pid, started = held
            since = datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise RunInUseError(
                f"{filename}: another process is writing this run (pid {pid} on {host}, started "
                f"{since}); wait for it to end, or if it is gone for good, "
                f"sqlite3 {filename} 'DELETE FROM respmatch_writer'"
            )
        con.execute("DELETE FROM respmatch_writer")
        con.execute("INSERT INTO respmatch_writer VALUES ('writer', ?, ?, ?, ?)", me)
        try:
            con.execute(_UNIQUE_INDEX)
        except sqlite3.IntegrityError:
            con.execute("ROLLBACK")
            raise RespmatchError(f"{filename}: holds some structure index twice (a damaged run)") from None
        con.execute("COMMIT")
    finally:
        con.close()
    return token


def _release_writer(filename: str, token: str) -> None:
    con = sqlite3.connect(filename, timeout=60)
    try:
        with con:
            con.execute("DELETE FROM respmatch_writer WHERE token = ?", (token,))
    finally:
        con.close()


class RunStore:
    """One run's structures in an ASE database, one row per finished structure.

    Given ``parameters`` it is the run's writer: it holds the writer lock until ``close()`` (or
    the end of a ``with`` block, or of the process).  Without, it only reads.
    """

    def __init__(
        self, path_or_url: str | Path, parameters: dict | None = None, resume: bool = False
    ):
        self.path = str(path_or_url)
        self._created = "://" not in self.path and not Path(self.path).exists()
        self.db = _connect(self.path)
        stored = self.db.metadata
        count = self.db.count()
        if (count or stored) and not resume:
            raise FileExistsError(
                f"{self.path}: already holds a run of {count} structures; "
                "use --resume to continue it or choose another --out"
            )
        self._release = None
        if parameters is None:
            self._parameters = stored
        else:
            if not isinstance(self.db, SQLite3Database):
                raise RespmatchError(f"{self.path}: a run is written to an SQLite file (one writer per run is enforced there)")
            self._parameters = _plain(parameters)
            if stored:
                _check_resume(self.path, stored, self._parameters)
            token = _acquire_writer(self.db.filename)
            self._release = weakref.finalize(self, _release_writer, self.db.filename, token)
            if self._parameters != self.db.metadata:
                self.db.metadata = self._parameters
        self.run_id = _run_id(self._parameters)
        selected = self.db.select("index", columns=["id", "key_value_pairs"], include_data=False)
        self._done = {row.key_value_pairs["index"] for row in selected}

    def close(self) -> None:
        """Give up the writer lock (a reader has none)."""
        if self._release is not None:
            self._release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close()
        if kind is not None and self._created and not self._done:
            # A run that failed before storing anything leaves no database that holds nothing.
            Path(self.path).unlink(missing_ok=True)

    @property
    def metadata(self) -> dict:
        """The run parameters as stored (JSON values: tuples come back as lists)."""
        return dict(self._parameters)

    def done_indices(self) -> set[int]:
        """Indices already stored: a resumed run generates only the others."""
        return set(self._done)

    def __len__(self) -> int:
        return len(self._done)

    def write(self, atoms: Atoms, record: Record, extra: dict | None = None) -> bool:
        """Store one finished structure as its own committed row; False (nothing written) when
        its index is already stored: a record that arrives twice is written once."""
        return bool(self.write_many([(atoms, record, extra)]))

    def write_many(self, items: Iterable[tuple[Atoms, Record, dict | None]]) -> list[Record]:
        """Store (atoms, record, extra) items in one transaction, skipping stored indices; the
        records written.  A cluster's chunk of results arrives at once and is committed at once."""
        if self._release is None or not self._release.alive:
            raise ValueError(f"{self.path}: this store is not the run's writer (open it with the run parameters)")
        rows = {}
        for atoms, record, extra in items:
            if record.index in self._done or record.index in rows:
                continue
            pairs = {**record.as_dict(), "run": self.run_id}
            for key, value in (extra or {}).items():
                if key in pairs:
                    raise ValueError(f"extra key {key!r} would overwrite a standard key")
                pairs[key] = value.item() if isinstance(value, np.generic) else value
            rows[record.index] = (atoms, record, pairs)
        if rows:
            try:
                with self.db:  # one connection, one commit
                    for atoms, _, pairs in rows.values():
                        self.db.write(atoms, key_value_pairs=pairs)
            except sqlite3.OperationalError as error:  # a full or read-only disk; the rows before stay
                raise RespmatchError(
                    f"{self.path}: cannot store structures: {error} (make room, then rerun with --resume)"
                ) from error
        self._done.update(rows)
        return [record for _, record, _ in rows.values()]

    def rows(self) -> Iterator[tuple[Atoms, dict]]:
        """Stored (atoms, key-value pairs), sorted by index."""
        for row in _sorted_rows(self.db):
            yield row.toatoms(), dict(row.key_value_pairs)


def read_run(db_path: str | Path, relaxed: bool = False) -> list[Atoms]:
    """The stored structures sorted by index, each with its record (and RECHECK_KEYS, where
    rechecked) in ``atoms.info``; with ``relaxed``, the re-check's relaxed structure as
    ``info["relaxed"]`` (Atoms)."""
    structures = []
    for row in _sorted_rows(open_existing(db_path)):
        atoms = row.toatoms()
        pairs = row.key_value_pairs
        atoms.info.update({key: pairs[key] for key in (*RECORD_KEYS, *RECHECK_KEYS, "composition") if key in pairs})
        if relaxed and "relaxed_positions" in row.data:
            cell = row.data.get("relaxed_cell")
            atoms.info["relaxed"] = Atoms(
                atoms.numbers, row.data["relaxed_positions"], cell=cell, pbc=cell is not None
            )
        structures.append(atoms)
    return structures


def export(db_path: str | Path, out_path: str | Path, *, only_converged: bool = False) -> int:
    """Write the stored structures, sorted by index, to extxyz or CIF (by suffix); return the count.

    Everything is read and checked before the file is opened, so a refused export writes nothing.
    """
    out_path = check_output(out_path, inputs=[] if "://" in str(db_path) else [db_path], kind="structures")
    fmt = EXPORT_FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise RespmatchError(
            f"{out_path}: unknown suffix {out_path.suffix!r}; supported: "
            + ", ".join(sorted(EXPORT_FORMATS))
        )
    images = []
    for atoms in read_run(db_path):
        if only_converged and not atoms.info["converged"]:
            continue
        if fmt == "cif" and not atoms.pbc.all():
            raise RespmatchError(
                f"{out_path}: structure {atoms.info['index']} is not periodic and CIF holds only "
                "crystals; export to .xyz instead"
            )
        images.append(atoms)
    with atomic_path(out_path) as temporary:
        ase_write(temporary, images, format=fmt)
    return len(images)
