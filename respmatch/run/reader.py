"""The one reader of a run: a typed ``Run`` that ``recheck``, ``evaluate``, ``report``, the run's
writers and the funnel's stages share.

A run database may hold 10⁵–10⁶ rows.  Building an ASE ``Atoms`` for each would dominate a
report's time, so ``open_run`` reads every row's columns without positions into an ``Entry``
(its ``Record``, its ``RecheckRecord`` where rechecked, composition, numbers and cell), and
``Run.structures`` reads chosen structures in full.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.db.core import YEAR

from respmatch.errors import RespmatchError
from respmatch.io import StructureError, read_structures
from respmatch.record import RECORD_KEYS, RecheckRecord, Record
from respmatch.run.database import classify, connect, create_tables, is_url
from respmatch.run.stages import Stages

_SUMMARY_COLUMNS = ["id", "ctime", "numbers", "cell", "pbc", "key_value_pairs"]


@dataclass(frozen=True)
class Entry:
    """One stored structure, without its positions."""

    index: int
    composition: str
    numbers: np.ndarray
    cell: np.ndarray  # Å, rows are lattice vectors
    pbc: np.ndarray
    record: Record | None  # None: a structure from a plain file (``recheck FILE --out OUT.db``)
    recheck: RecheckRecord | None  # None: not rechecked
    pairs: dict = field(repr=False)  # every key-value pair of the row, extras included
    ctime: float | None = None  # when it was stored (ASE's time unit: years since 2000)

    @property
    def periodic(self) -> bool:
        return bool(np.all(self.pbc))


@dataclass(frozen=True)
class Checkpoint:
    """The model a run was searched with, as the run stored it."""

    path: str | None  # as given to the search (perhaps relative to the run's folder)
    sha256: str | None  # ``respmatch.model.model_checksum`` of the model

    def locate(self, run_folder: Path | None) -> Path | None:
        """The checkpoint file: as stored, or relative to the run's folder."""
        if not self.path:
            return None
        path = Path(self.path)
        if not path.is_file() and run_folder is not None and not path.is_absolute():
            path = run_folder / path
        return path


@dataclass
class Run:
    """One run: its parameters as stored, an entry per structure (sorted by index), a way to
    read chosen structures in full, and its stage records."""

    name: str
    parameters: dict
    entries: list[Entry]
    # entry positions -> (Atoms, the row's data: the re-check's relaxed structure)
    read: Callable[[Sequence[int]], list[tuple[Atoms, dict]]] = field(repr=False)
    stages: Stages = field(default_factory=lambda: Stages(None), repr=False)
    db: object = field(default=None, repr=False)  # ASE's connection, for the run's writers
    folder: Path | None = None  # where the database lies (a relative model path is resolved there)
    row_ids: list[int] = field(default_factory=list, repr=False)  # database row of each entry
    seconds: float | None = None  # wall time over which the search stored its structures

    @property
    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.parameters.get("model"), self.parameters.get("model_sha256"))

    def structures(self, positions: Sequence[int] | None = None, *, relaxed: bool = False) -> list[Atoms]:
        """Chosen structures (all by default) as ``Atoms`` whose ``info`` carries the record,
        the re-check's columns where rechecked, and ``composition``; with ``relaxed`` the
        re-check's relaxed structure as ``info["relaxed"]``."""
        positions = range(len(self.entries)) if positions is None else positions
        out = []
        for k, (atoms, data) in zip(positions, self.read(positions)):
            entry = self.entries[k]
            atoms = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            atoms.info.update({key: entry.pairs[key] for key in (*RECORD_KEYS, "composition") if key in entry.pairs})
            if entry.recheck is not None:
                atoms.info.update(entry.recheck.columns())
                verdict = RecheckRecord.from_pairs(entry.pairs, data) if relaxed else None
                if verdict is not None and verdict.relaxed_positions is not None:
                    atoms.info["relaxed"] = verdict.relaxed(atoms.numbers)
            out.append(atoms)
        return out

    @classmethod
    def from_structures(
        cls, structures: list[Atoms], name: str = "structures", parameters: dict | None = None,
        seconds: float | None = None,
    ) -> Run:
        """A run held in memory, e.g. what ``search_compositions`` yields (``atoms.info`` carries
        the store's keys and ``composition``)."""
        entries = [
            _entry({**atoms.info, "index": atoms.info.get("index", k)}, atoms.numbers, atoms.cell.array, atoms.pbc, {})
            for k, atoms in enumerate(structures)
        ]
        read = lambda positions: [(structures[k], {}) for k in positions]  # noqa: E731
        return cls(name, dict(parameters or {}), entries, read, seconds=seconds)


def _entry(pairs: dict, numbers, cell, pbc, parameters: dict, ctime=None) -> Entry:
    has_record = all(pairs.get(key) is not None for key in RECORD_KEYS)
    composition = parameters.get("composition") or pairs.get("composition") or Atoms(numbers).get_chemical_formula()
    return Entry(
        index=int(pairs["index"]),
        composition=str(composition),
        numbers=np.asarray(numbers),
        cell=np.asarray(cell, dtype=float),
        pbc=np.asarray(pbc, dtype=bool),
        record=Record.from_info(pairs) if has_record else None,
        recheck=RecheckRecord.from_pairs(pairs),  # its relaxed structure is read with the atoms
        pairs=dict(pairs),
        ctime=ctime,
    )


def open_run(path_or_url: str | Path, *, create: bool = False) -> Run:
    """The run in a database, checked: the one reader (and the one door of the writers).

    Refuses, with one line naming the file, anything that is not a respmatch run: a missing file
    (unless ``create``: never created here otherwise, as ``ase.db.connect`` would), a folder, a
    file that is not SQLite, another program's SQLite database, an ASE database whose rows
    respmatch did not write, an empty file.  An SQLite file with no tables (a run killed in its
    first instant) is an empty run.  Reading writes nothing: a refused command leaves the file byte-identical.
    """
    name = str(path_or_url)
    kind = classify(name)
    if kind == "new" and not create:
        if not Path(name).exists():
            raise FileNotFoundError(f"{name}: no such run database")
        if not Path(name).stat().st_size:
            raise RespmatchError(f"{name}: empty file, not a run database")
        return _empty(name, None)  # SQLite with no tables: a run killed in its first instant
    if kind == "new":
        create_tables(name)
    db = connect(name)
    if kind == "new":
        return _empty(name, db)
    try:
        parameters = db.metadata
        with db:  # one connection for all rows: ASE opens one per row otherwise (4× slower)
            selected = [
                (row.id, row.ctime, row.numbers, row.cell, row.pbc, row.key_value_pairs)
                for row in db.select(columns=_SUMMARY_COLUMNS, include_data=False)
            ]
    except (sqlite3.DatabaseError, ValueError, KeyError) as error:
        raise RespmatchError(f"{name}: not a respmatch run database ({error})") from None
    if parameters and "composition" not in parameters and "formulas" not in parameters:
        raise RespmatchError(f"{name}: not a respmatch run (its parameters name no composition)")
    # A run's rows carry the whole record; a re-check's own database at least each structure's index.
    required, writer = (RECORD_KEYS, "respmatch generate") if parameters else (("index",), "respmatch generate or recheck")
    for row_id, *_, pairs in selected:
        if not pairs.keys() >= set(required):
            raise RespmatchError(
                f"{name}: not a respmatch run (row {row_id} lacks the keys {', '.join(required)}: "
                f"was it written by {writer}?)"
            )
    selected.sort(key=lambda row: row[5]["index"])
    ids = [row[0] for row in selected]

    def read(positions: Sequence[int]) -> list[tuple[Atoms, dict]]:
        with db:
            return [(row.toatoms(), row.data) for row in (db.get(id=ids[k]) for k in positions)]

    entries = [_entry(pairs, numbers, cell, pbc, parameters, ctime) for _, ctime, numbers, cell, pbc, pairs in selected]
    local = not is_url(name)
    times = [row[1] for row in selected]
    return Run(
        Path(name).name if local else name, parameters, entries, read,
        stages=Stages(name if local else None), db=db, folder=Path(name).parent if local else None, row_ids=ids,
        # a re-check's own database of a plain file writes all its rows at once: no search time
        seconds=(max(times) - min(times)) * YEAR if len(times) > 1 and parameters else None,
    )


def _empty(name: str, db) -> Run:
    return Run(Path(name).name, {}, [], read=lambda positions: [], stages=Stages(name), db=db, folder=Path(name).parent)


def read_run(path_or_url: str | Path, relaxed: bool = False) -> list[Atoms]:
    """The stored structures sorted by index (``Run.structures``)."""
    return open_run(path_or_url).structures(relaxed=relaxed)


def load_generated(source: str | Path | list[Atoms]) -> list[Atoms]:
    """Structures to judge: from ``RUN.db`` (sorted by index, with the re-check's relaxed
    structures), an extxyz/CIF/csv file, or a list of Atoms."""
    if isinstance(source, list):
        return source
    path = Path(source)
    if not path.exists():
        raise StructureError(f"{path}: no such file")
    if path.suffix.lower() == ".db":
        structures = read_run(path, relaxed=True)
        if not structures:
            raise StructureError(f"{path}: the run database holds no structures")
        return structures
    # No overlap check: generated structures whose atoms collapsed onto each other must still be
    # counted as failures, not refused at the door.
    return read_structures(path, min_distance=0.0)
