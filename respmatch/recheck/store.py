"""Where re-check verdicts go: the rows of a run database (updated in place) or a new database.

A new database (``--out``) first receives every source structure (with the run's parameters and
times when the source is a run), under a temporary name that is renamed when whole (so a kill
leaves none or all of them), then each verdict as it arrives.  Rows are keyed by ``index``.

Everything that may refuse the re-check (results of other settings, results without
``--resume``, a database of another source) is read first, through the run reader: a refused
re-check leaves the file byte-identical.  Then the re-check takes the run's ``WriterLock``: a
search still writing the run, or a second re-check, is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from ase import Atoms
from ase.db.core import now
from ase.db.row import AtomsRow

from respmatch.errors import RespmatchError
from respmatch.files import atomic_path
from respmatch.record import RECORD_KEYS, RecheckRecord
from respmatch.run import Run, WriterLock, open_run
from respmatch.run.database import classify, connect


class RecheckStore:
    """The verdicts' destination, the writer lock held until ``close()`` or the end of a ``with``
    block.  ``done``: indices already rechecked with these ``settings`` (a resume skips them).
    With ``source`` (a run or structures) it is a new database holding their copy; one that
    fails before holding a verdict is removed."""

    def __init__(
        self, path: str | Path, settings: dict, resume: bool, source: Run | list[Atoms] | None = None,
        opened: Run | None = None,
    ):
        """``opened``: the run at ``path`` where the caller has read it already."""
        self.path = str(path)
        self.written = 0
        self._created = False
        target = opened or (open_run(self.path) if source is None or classify(self.path) == "ase" else None)
        if source is not None and target is not None:
            count, expected = len(target.entries), len(source.entries if isinstance(source, Run) else source)
            if count and not resume:
                raise FileExistsError(f"{self.path}: already holds {count} structures; use --resume to continue")
            if count and count != expected:
                raise RespmatchError(f"{self.path}: holds {count} structures, the source {expected}: not its re-check")
        if target is not None:
            self.done = rechecked(target, settings, resume)
        try:
            if target is None or not target.entries:
                self._created = not Path(self.path).exists()
                _copy(source, Path(self.path))
                target, self.done = open_run(self.path), set()
            self._lock = WriterLock(self.path).acquire()
        except BaseException:
            self._discard_if_empty()
            raise
        self.close = self._lock.release
        self.db = target.db
        self.rows = dict(zip((entry.index for entry in target.entries), target.row_ids))

    def __enter__(self) -> RecheckStore:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close()
        if kind is not None:
            self._discard_if_empty()

    def _discard_if_empty(self) -> None:
        """A database this re-check created and stored no verdict in leaves nothing behind."""
        if self._created and not self.written:
            Path(self.path).unlink(missing_ok=True)

    @staticmethod
    def key_of(atoms: Atoms) -> int:
        return int(atoms.info["index"])

    def write_many(self, verdicts: list[tuple[int, RecheckRecord]]) -> None:
        """Commit a chunk's verdicts into their rows, in one transaction (a commit per row would
        cost more than a cheap potential's single point)."""
        with self.db:
            for index, verdict in verdicts:
                self.db.update(self.rows[index], data=verdict.data() or None, **verdict.columns())
        self.written += len(verdicts)


def rechecked(run: Run, settings: dict, resume: bool) -> set[int]:
    """Indices of ``run`` already rechecked with these ``settings``; refuses other settings, and
    any earlier results unless resuming."""
    done = {entry.index: entry.recheck for entry in run.entries if entry.recheck is not None}
    if done and not resume:
        raise FileExistsError(
            f"{run.name}: already holds re-check results for {len(done)} structures; "
            "use --resume to continue, or --out for a new database"
        )
    for index, verdict in done.items():
        if verdict.settings != settings:
            raise RespmatchError(
                f"{run.name}: structure {index} was rechecked with {verdict.settings}, not {settings}; "
                "use another --out"
            )
    return set(done)


def _copy(source: Run | list[Atoms], path: Path) -> None:
    """The source structures (their records, composition, and a run's parameters and times) as
    a new database, written under a temporary name and renamed: a kill leaves none or all."""
    with atomic_path(path) as temporary:
        temporary.unlink(missing_ok=True)  # what a killed re-check left
        db = connect(temporary)
        structures = source.structures() if isinstance(source, Run) else source
        times = [entry.ctime for entry in source.entries] if isinstance(source, Run) else [None] * len(source)
        with db:  # one transaction
            for atoms, ctime in zip(structures, times):
                row = AtomsRow(Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc))
                row.ctime = now() if ctime is None else ctime  # a run's own times: the report shows its duration
                row.user = os.getenv("USER")
                pairs = {key: atoms.info[key] for key in (*RECORD_KEYS, "composition") if atoms.info.get(key) is not None}
                db.write(row, key_value_pairs=pairs)
            if isinstance(source, Run) and source.parameters:
                db.metadata = source.parameters
