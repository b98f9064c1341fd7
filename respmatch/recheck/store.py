"""Where re-check records go: the rows of a run database (updated in place) or a new database.

A new database (``--out``) first receives every source structure in one transaction (so a kill
leaves it empty or whole), then each record as it arrives.  Rows are keyed by ``index``.  The
re-check holds the run's writer lock (respmatch.store) while it writes: a search still writing
the run, or a second re-check, is refused.
"""

from __future__ import annotations

import weakref
from pathlib import Path

from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.store import RECORD_KEYS, _acquire_writer, _connect, _release_writer

DATA_KEYS = ("relaxed_positions", "relaxed_cell")  # kept in the row's data, not its columns


class RecheckStore:
    def __init__(self, path: str | Path, source: list[Atoms] | None = None, resume: bool = False):
        self.path = str(path)
        if source is not None:
            self._create(source, resume)
        self.db = _connect(self.path)
        self.db.count()  # ASE makes its tables on first use: the lock needs them
        token = _acquire_writer(self.db.filename)
        self.close = weakref.finalize(self, _release_writer, self.db.filename, token)
        self.rows = {
            row.key_value_pairs["index"]: (row.id, row.key_value_pairs)
            for row in self.db.select("index", include_data=False)
        }

    def _create(self, source: list[Atoms], resume: bool) -> None:
        db = _connect(self.path)
        count = db.count()
        if count and not resume:
            raise FileExistsError(f"{self.path}: already holds {count} structures; use --resume to continue")
        if count and count != len(source):
            raise RespmatchError(f"{self.path}: holds {count} structures, the source {len(source)}: not its re-check")
        if count:
            return
        with db:  # one transaction: all rows or none
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

    def write(self, index: int, record: dict) -> None:
        """Commit one structure's record into its row."""
        row_id, _ = self.rows[index]
        data = {key: record.pop(key) for key in DATA_KEYS if record.get(key) is not None}
        pairs = {key: value for key, value in record.items() if value is not None}
        self.db.update(row_id, data=data or None, **pairs)
