"""The runs a report shows: the typed run (respmatch.run) and one page summary per structure.

The summaries come from the run's entries (no positions are read); only the structures whose
coordinates the page embeds are read in full (``RunView.read``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.predict.funnel import read_funnel
from respmatch.predict.molecule_funnel import read_funnel as read_molecule_funnel
from respmatch.run import Entry, Run, open_run


@dataclass
class RunView:
    """One run as the page shows it: the typed run and a summary per entry."""

    run: Run
    rows: list[dict]
    funnel: dict | None = None  # a predict run's stages (predict.funnel / predict.molecule_funnel)

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def parameters(self) -> dict:
        return self.run.parameters

    @property
    def seconds(self) -> float | None:
        return self.run.seconds

    def read(self, positions: list[int]) -> list[Atoms]:
        return self.run.structures(positions)


def summary(entry: Entry) -> dict:
    """What the page keeps of every structure (ASE units: eV/atom, Å³/atom)."""
    n = len(entry.numbers)
    record = entry.record
    pairs = entry.pairs
    energy = record.pseudo_energy_per_atom if record else pairs.get("pseudo_energy_per_atom")
    converged = record.converged if record else pairs.get("converged")
    steps = record.steps if record else pairs.get("steps")
    return {
        "index": entry.index,
        "composition": entry.composition,
        "natoms": n,
        "energy": None if energy is None else float(energy),
        "volume": abs(float(np.linalg.det(entry.cell))) / n if entry.periodic else None,
        "periodic": entry.periodic,
        "converged": None if converged is None else bool(converged),
        "steps": None if steps is None else int(steps),
        "recheck": entry.recheck,
    }


def view(run: Run, label: str | None = None) -> RunView:
    if not run.entries:
        raise RespmatchError(f"{label or run.name}: the run holds no structures yet")
    if run.parameters.get("predict") == "molecules":
        funnel = read_molecule_funnel(run)
    else:
        funnel = read_funnel(run.stages, run.parameters) if "formulas" in run.parameters and run.stages.names() else None
    return RunView(run, [summary(entry) for entry in run.entries], funnel)


def read_database(path: str | Path) -> RunView:
    """A run database written by ``respmatch generate`` (and perhaps updated by ``recheck``), or
    the database of ``respmatch recheck FILE --out OUT.db``, through the run reader: anything
    else is refused with one line naming the file."""
    return view(open_run(path), str(path))


def from_structures(
    structures: list[Atoms], name: str = "structures", parameters: dict | None = None, seconds: float | None = None
) -> RunView:
    """A run held in memory, e.g. what ``search_compositions`` yields (``atoms.info`` carries the
    store's keys and ``composition``)."""
    if not structures:
        raise RespmatchError(f"{name}: no structures to report")
    return view(Run.from_structures(structures, name, parameters, seconds))
