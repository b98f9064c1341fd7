"""The writer of a random-structure-search run, kept in an ASE database.

Every structure is written, and committed, the moment it finishes (or with the rest of its
chunk, on a cluster), so a run killed at any moment loses only the structures in flight; a
resumed run reads back which indices are stored and skips them.  The run parameters (model
checksum included) live in the database metadata, so a resume can refuse to mix structures from
a different run into the same file.  The file is opened through the run reader
(``open_run``): another program's database is refused before ASE writes a byte into it.  The
writer holds the run's ``WriterLock`` from opening to ``close``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.db.sqlite import SQLite3Database
from ase.io import write as ase_write

from respmatch.config import parameter_differences, plain
from respmatch.errors import RespmatchError
from respmatch.files import atomic_path, check_output
from respmatch.record import Record
from respmatch.run.database import WriterLock, classify, is_url
from respmatch.run.reader import open_run, read_run

# Parameters that may differ between a run and its resumption; n may only grow (extend a run).
RESUME_MAY_CHANGE = frozenset({"batch_size", "device", "threads", "n", "model"})

EXPORT_FORMATS = {".cif": "cif", ".extxyz": "extxyz", ".xyz": "extxyz"}


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


class RunStore:
    """One run's structures in an ASE database, one row per finished structure.

    Given ``parameters`` it is the run's writer: it holds the writer lock until ``close()`` (or
    the end of a ``with`` block, or of the process).  Without, it only reads.  ``stages``
    (stage -> settings) are begun once the lock is held; a resume under other settings of one
    of them is refused with the parameters, before anything is written.
    """

    def __init__(
        self, path_or_url: str | Path, parameters: dict | None = None, resume: bool = False,
        stages: Mapping[str, Mapping] | None = None,
    ):
        self.path = str(path_or_url)
        # A file that holds nothing yet (missing, empty, no tables) is removed again if the run
        # fails before storing a structure.
        self._created = classify(self.path) == "new"
        # The reader's checks first: a foreign file is refused before ASE writes into it.
        run = open_run(self.path, create=parameters is not None)
        self.db, stored = run.db, run.parameters
        if (run.entries or stored) and not resume:
            raise FileExistsError(
                f"{self.path}: already holds a run of {len(run.entries)} structures; "
                "use --resume to continue it or choose another --out"
            )
        self._lock = None
        if parameters is None:
            self._parameters = stored
        else:
            if not isinstance(self.db, SQLite3Database):
                raise RespmatchError(f"{self.path}: a run is written to an SQLite file (one writer per run is enforced there)")
            self._parameters = plain(parameters)
            if stored:
                _check_resume(self.path, stored, self._parameters)
            for stage, settings in (stages or {}).items():
                run.stages.check(stage, settings)
            self.db.count()  # ASE makes its tables on first use: the lock needs them
            self._lock = WriterLock(self.db.filename).acquire()
            if self._parameters != self.db.metadata:
                self.db.metadata = self._parameters
        self.stages = run.stages
        for stage, settings in (stages or {}).items():
            self.begin_stage(stage, settings)
        self.run_id = _run_id(self._parameters)
        self._done = {entry.index for entry in run.entries}

    def close(self) -> None:
        """Give up the writer lock (a reader has none)."""
        if self._lock is not None:
            self._lock.release()

    def _writer(self) -> None:
        if self._lock is None or not self._lock.held:
            raise ValueError(f"{self.path}: this store is not the run's writer (open it with the run parameters)")

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
        self._writer()
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
        for row in self.db.select("index", sort="index"):
            yield row.toatoms(), dict(row.key_value_pairs)

    # --- stage records (respmatch.run.stages): what a stage after the search computed ---------

    def begin_stage(self, stage: str, settings: Mapping) -> None:
        """Start (or, resumed, continue) a stage; refused when begun with other settings."""
        self._writer()
        self.stages.begin(stage, settings)

    def write_stage(self, stage: str, records: Mapping[str, object]) -> None:
        """Commit records (dataclass instances) of a begun stage under their keys."""
        self._writer()
        self.stages.write(stage, records)

    def finish_stage(self, stage: str) -> None:
        self._writer()
        self.stages.finish(stage)


def export(db_path: str | Path, out_path: str | Path, *, only_converged: bool = False) -> int:
    """Write the stored structures, sorted by index, to extxyz or CIF (by suffix); return the count.

    Everything is read and checked before the file is opened, so a refused export writes nothing.
    """
    out_path = check_output(out_path, inputs=[] if is_url(db_path) else [db_path], kind="structures")
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
