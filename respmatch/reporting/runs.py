"""The runs a report shows: one summary per structure, full structures only where asked.

A run database may hold 10⁵–10⁶ rows.  Building an ASE ``Atoms`` for each would dominate the
report's time, so the summaries come from the row columns without positions, and only the
structures whose coordinates the page embeds are read in full (``Run.structures``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.db.core import YEAR

from respmatch.errors import RespmatchError
from respmatch.predict.funnel import read_funnel
from respmatch.predict.store import has_stages
from respmatch.record import RECORD_KEYS
from respmatch.store import open_existing

# Keys a physical re-check (``respmatch recheck``) writes into a run's rows.
RECHECK_PREFIXES = ("physical_", "relax_", "relaxed_")
_SUMMARY_COLUMNS = ["id", "ctime", "numbers", "cell", "pbc", "natoms", "key_value_pairs"]


@dataclass
class Run:
    """One run: its parameters as stored, a summary per structure (sorted as the run stores
    them), and a way to read chosen structures in full."""

    name: str
    parameters: dict
    rows: list[dict]
    read: Callable[[list[int]], list[Atoms]] = field(repr=False)  # row positions -> structures
    seconds: float | None = None  # wall time over which the structures were written
    funnel: dict | None = None  # a predict run's stages (predict.funnel.read_funnel)


def summary(atoms_numbers, cell, pbc, pairs: dict, composition: str) -> dict:
    """What the page keeps of every structure (ASE units: eV/atom, Å³/atom)."""
    n = len(atoms_numbers)
    periodic = bool(np.all(pbc))
    energy = pairs.get("pseudo_energy_per_atom")
    return {
        "index": int(pairs.get("index", 0)),
        "composition": composition,
        "natoms": n,
        "energy": None if energy is None else float(energy),
        "volume": abs(float(np.linalg.det(np.asarray(cell, dtype=float)))) / n if periodic else None,
        "periodic": periodic,
        "converged": None if pairs.get("converged") is None else bool(pairs["converged"]),
        "steps": None if pairs.get("steps") is None else int(pairs["steps"]),
        "recheck": {k: v for k, v in pairs.items() if k.startswith(RECHECK_PREFIXES)},
    }


def read_database(path: str | Path) -> Run:
    """A run database written by ``respmatch generate`` (and perhaps updated by ``recheck``), or
    the database of ``respmatch recheck FILE --out OUT.db``: structures without run parameters,
    shown with what they have.

    Refuses, with one line naming the file, anything else: a missing file (never created here,
    as ``ase.db.connect`` would), a file that is not an ASE database, rows respmatch did not
    write, no rows at all.
    """
    path = Path(path)
    db = open_existing(path)
    try:
        parameters = db.metadata
        with db:  # one connection for all rows: ASE opens one per row otherwise (4× slower)
            # (id, ctime, numbers, cell, pbc, key-value pairs) of every row, without positions
            selected = [
                (row.id, row.ctime, row.numbers, row.cell, row.pbc, row.key_value_pairs)
                for row in db.select(columns=_SUMMARY_COLUMNS, include_data=False)
            ]
    except (sqlite3.DatabaseError, ValueError, KeyError) as error:
        raise RespmatchError(f"{path}: not a respmatch run database ({error})") from None
    if parameters and "composition" not in parameters and "formulas" not in parameters:
        raise RespmatchError(f"{path}: not a respmatch run (its parameters name no composition)")
    # A run's rows carry the whole record; a re-check's own database at least each structure's index.
    required, writer = (RECORD_KEYS, "respmatch generate") if parameters else (("index",), "respmatch generate or recheck")
    for row_id, *_, pairs in selected:
        if not pairs.keys() >= set(required):
            raise RespmatchError(
                f"{path}: not a respmatch run (row {row_id} lacks the keys {', '.join(required)}: "
                f"was it written by {writer}?)"
            )
    if not selected:
        raise RespmatchError(f"{path}: the run holds no structures yet")
    selected.sort(key=lambda row: row[5]["index"])
    ids = [row[0] for row in selected]

    def read(positions: list[int]) -> list[Atoms]:
        structures = []
        for k in positions:
            row = db.get(id=ids[k])
            atoms = row.toatoms()
            atoms.info.update({key: row.key_value_pairs[key] for key in RECORD_KEYS if key in row.key_value_pairs})
            structures.append(atoms)
        return structures

    def composition(numbers, pairs) -> str:
        return parameters.get("composition") or pairs.get("composition") or Atoms(numbers).get_chemical_formula()

    ctimes = [row[1] for row in selected]
    return Run(
        name=path.name,
        parameters=parameters,
        rows=[summary(numbers, cell, pbc, pairs, composition(numbers, pairs)) for _, _, numbers, cell, pbc, pairs in selected],
        read=read,
        # a re-check's own database writes all its rows at once: no search time to show
        seconds=(max(ctimes) - min(ctimes)) * YEAR if len(selected) > 1 and parameters else None,
        funnel=read_funnel(path, parameters) if "formulas" in parameters and has_stages(path) else None,
    )


def from_structures(
    structures: list[Atoms], name: str = "structures", parameters: dict | None = None, seconds: float | None = None
) -> Run:
    """A run held in memory, e.g. what ``search_compositions`` yields (``atoms.info`` carries the
    store's keys and ``composition``)."""
    if not structures:
        raise RespmatchError(f"{name}: no structures to report")
    rows = [
        summary(
            atoms.numbers,
            atoms.cell.array,
            atoms.pbc,
            {**atoms.info, "index": atoms.info.get("index", k)},
            str(atoms.info.get("composition") or atoms.get_chemical_formula()),
        )
        for k, atoms in enumerate(structures)
    ]
    return Run(
        name=name,
        parameters=dict(parameters or {}),
        rows=rows,
        read=lambda positions: [structures[k] for k in positions],
        seconds=seconds,
    )
