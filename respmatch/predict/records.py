"""What each stage of a prediction keeps in its run: typed stage records (``respmatch.run.stages``).

A record is stored, committed, the moment it is known, so a resumed run and the report read it
back instead of recomputing.  Keys: a formula (``distinct``, ``shortlist``, ``final``), one
candidate ``FORMULA#GROUP`` (``screen``, ``relax``; GROUP its position among the formula's
distinct groups), a stage name (``time``).  The groups and ranked structures inside a record
are the dicts ``predict.groups`` makes (the same ones ``respmatch.predict`` returns).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

from ase import Atoms

STAGES = ("search", "distinct", "shortlist", "screen", "relax", "final")
TIME = "time"  # the stage whose records are the seconds each stage took


def candidate(formula: str, group: int) -> str:
    """The key of a shortlisted candidate's relaxations."""
    return f"{formula}#{group}"


def formula_of(key: str) -> str:
    return key.rpartition("#")[0]


def group_of(key: str) -> int:
    return int(key.rpartition("#")[2])


@dataclass
class Distinct:
    """A formula's converged tries grouped into distinct structures, lowest Ẽ first: per group
    its lowest Ẽ per atom (``energy``), how many tries found it (``count``) and their run indices
    (``members``, the lowest-Ẽ try first)."""

    groups: list[dict]


@dataclass
class Shortlist:
    """Positions in ``Distinct.groups`` of the groups the physics sees, best pre-score first."""

    groups: list[int]


@dataclass
class Relaxation:
    """One candidate relaxed (cell and positions) by the universal potential."""

    energy_per_atom: float | None  # eV/atom; None when the potential returned a non-finite energy
    steps: int
    converged: bool
    numbers: list[int]
    positions: list[list[float]]  # Å
    cell: list[list[float]]  # Å, rows are lattice vectors
    error: str | None = None

    def atoms(self) -> Atoms:
        """The relaxed structure."""
        return Atoms(self.numbers, self.positions, cell=self.cell, pbc=True)


@dataclass
class Ranking:
    """A formula's relaxed candidates grouped again and ranked by physical energy per atom, the
    lowest first (``groups.final_ranking``)."""

    structures: list[dict]


@dataclass
class StageTime:
    """Seconds a stage took, summed over the passes of a resumed run: wall, and the CPU of the
    process that ran it (work on Dask workers shows in wall time only)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0


@contextmanager
def timed(runs, stage: str):
    """Add the block's seconds to ``stage``'s stored time in the run (``runs``: its ``RunStore``),
    also when it is interrupted: a resumed run's cost is the sum of its passes.  Both funnels,
    crystals and molecules, keep their time this way."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        spent = runs.stages.records(TIME, StageTime).get(stage, StageTime())
        runs.write_stage(TIME, {stage: StageTime(spent.wall_s + time.perf_counter() - wall,
                                                 spent.cpu_s + time.process_time() - cpu)})
