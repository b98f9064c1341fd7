"""Where re-check records go: the rows of a run database (updated in place) or a new database.

A new database (``--out``) first receives every source structure, under a temporary name that
is renamed when whole (so a kill leaves none or all of them), then each record as it arrives.  Rows are keyed by ``index``.  The
re-check holds the run's writer lock (respmatch.store) while it writes: a search still writing
the run, or a second re-check, is refused.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.files import atomic_path
from respmatch.store import RECORD_KEYS, _acquire_writer, _connect, _release_writer, open_existing

DATA_KEYS = ("relaxed_positions", "relaxed_cell")  # kept in the row's data, not its columns


class RecheckStore:
    """The records' destination, the writer lock held until ``close()`` or the end of a ``with``
    block.  A new database (``source`` given) that fails before holding a record is removed."""

    def __init__(self, path: str | Path, source: list[Atoms] | None = None, resume: bool = False):
        self.path = str(path)
        self.written = 0
        self._created = source is not None and not Path(self.path).exists()
        try:
            if source is not None:
                self._create(source, resume)
            self.db = _connect(self.path)
            self.db.count()  # ASE makes its tables on first use: the lock needs them
            token = _acquire_writer(self.db.filename)
        except BaseException:
            self._discard_if_empty()
            raise
        self.close = weakref.finalize(self, _release_writer, self.db.filename, token)
        self.rows = {
            row.key_value_pairs["index"]: (row.id, row.key_value_pairs)
            for row in self.db.select("index", include_data=False)
        }

    def __enter__(self) -> RecheckStore:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close()
        if kind is not None:
            self._discard_if_empty()

    def _discard_if_empty(self) -> None:
        """A database this re-check created and stored no record in leaves nothing behind."""
        if self._created and not self.written:
            Path(self.path).unlink(missing_ok=True)

    def _create(self, source: list[Atoms], resume: bool) -> None:
        path = Path(self.path)
        count = open_existing(path).count() if path.is_file() and path.stat().st_size else 0
        if count and not resume:
            raise FileExistsError(f"{self.path}: already holds {count} structures; use --resume to continue")
        if count and count != len(source):
            raise RespmatchError(f"{self.path}: holds {count} structures, the source {len(source)}: not its re-check")
        if count:
            return
        # Written under a temporary name and renamed: a kill leaves no database or a whole one.
        with atomic_path(path) as temporary:
            temporary.unlink(missing_ok=True)  # what a killed re-check left
            db = _connect(temporary)
            with db:  # one transaction
                for atoms in source:
                    pairs = {key: atoms.info[key] for key in (*RECORD_KEYS, "composition") if atoms.info.get(key) is not None}
                    db.write(Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc), key_value_pairs=pairs)

    @staticmethod
    def key_of(atoms: Atoms) -> int:
        return int(atoms.info["index"])

    def rechecked(self, settings: dict, resume: bool) -> set[int]:
        """Indices already rechecked with these ``settings``; refuses other settings, and any
        earlier results unless resuming."""
        done = {index: pairs for index, (_, pairs) in self.rows.items() if "physical_potential" in pairs}
        if done and not resume:
            raise FileExistsError(
                f"{self.path}: already holds re-check results for {len(done)} structures; "
                "use --resume to continue, or --out for a new database"
            )
        for index, pairs in done.items():
            stored = {key: pairs.get(key) for key in settings}
            if stored != settings:
                raise RespmatchError(
                    f"{self.path}: structure {index} was rechecked with {stored}, not {settings}; "
                    "use another --out"
                )
        return set(done)

    def write_many(self, records: list[tuple[int, dict]]) -> None:
        """Commit a chunk's records into their rows, in one transaction (a commit per row would
        cost more than a cheap potential's single point)."""
        with self.db:
            for index, record in records:
                row_id, _ = self.rows[index]
                data = {key: record.pop(key) for key in DATA_KEYS if record.get(key) is not None}
                pairs = {key: value for key, value in record.items() if value is not None}
                self.db.update(row_id, data=data or None, **pairs)
        self.written += len(records)
