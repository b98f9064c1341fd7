"""A ranked search budget: M tries of one composition grouped into distinct structures, ranked.

As AIRSS reports a search, the tries are grouped into distinct structures (pymatgen's
StructureMatcher with the CSP tolerances) and the groups ranked by the lowest Ẽ per atom among
their members; how many tries found a structure is read as confidence in it.  Grouping goes in
order of Ẽ, and a try is compared only with groups whose lowest Ẽ lies within ``energy_window``
of its own: tries that reach one minimum end at one Ẽ, so the window saves most of the
StructureMatcher fits (grouping 500 tries pairwise would take minutes per formula); two tries
farther apart in Ẽ count as distinct even where the loose CSP tolerances would join them.
With ``keep=K`` only the K lowest groups are formed; a try that matches none of them belongs to
a group ranked below K and is only counted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import spglib
from ase import Atoms
from ase.io import write
from pymatgen.core import Structure
from pymatgen.core.structure_matcher import StructureMatcher
from pymatgen.io.ase import AseAtomsAdaptor

from respmatch.errors import RespmatchError
from respmatch.files import atomic_path, check_output
from respmatch.store import read_run
from respmatch.evaluate.symmetry import quiet_spglib

MATCHER_TOLERANCES = {"stol": 0.5, "ltol": 0.3, "angle_tol": 10}  # CDVAE / DiffCSP / FlowMM
ENERGY_WINDOW = 0.02  # eV/atom of Ẽ within which two tries may be one structure


@dataclass
class Distinct:
    """One distinct structure: its members (indices of the tries), lowest-Ẽ member first."""

    energy: float  # lowest Ẽ per atom among the members
    members: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.members)

    @property
    def index(self) -> int:
        return self.members[0]


def to_structure(atoms: Atoms) -> Structure:
    if not atoms.pbc.all():
        raise RespmatchError(f"{atoms.get_chemical_formula()}: crystal evaluation needs periodic structures")
    # Without info and calculator: pymatgen would copy them into site properties on every fit.
    return AseAtomsAdaptor.get_structure(Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True))


def group_distinct(
    crystals: Sequence[Structure],
    energies: Sequence[float | None],
    keep: int | None = None,
    *,
    energy_window: float = ENERGY_WINDOW,
    matcher: StructureMatcher | None = None,
) -> tuple[list[Distinct], int]:
    """Distinct structures of these crystals (one composition), lowest Ẽ first, and how many
    crystals fell into groups ranked below ``keep``.  A crystal without Ẽ ranks last and is
    compared with every group."""
    matcher = matcher or StructureMatcher(**MATCHER_TOLERANCES)
    order = sorted(range(len(crystals)), key=lambda i: math.inf if energies[i] is None else energies[i])
    groups: list[Distinct] = []
    beyond = 0
    for i in order:
        energy = math.inf if energies[i] is None else energies[i]
        near = [g for g in groups if energies[i] is None or energy - g.energy <= energy_window]
        found = next((g for g in near if matcher.fit(crystals[g.index], crystals[i])), None)
        if found is not None:
            found.members.append(i)
        elif keep is None or len(groups) < keep:
            groups.append(Distinct(energy=energy, members=[i]))
        else:
            beyond += 1
    return groups, beyond


def rank_tries(structures: Sequence[Atoms], keep: int | None = None, **options) -> tuple[list[Distinct], int]:
    """The ``keep`` lowest-Ẽ distinct structures among the converged tries (``info``:
    ``converged``, ``pseudo_energy_per_atom``), and how many converged tries lie beyond them.
    Member indices refer to ``structures``."""
    converged = [i for i, atoms in enumerate(structures) if atoms.info.get("converged", True)]
    groups, beyond = group_distinct(
        [to_structure(structures[i]) for i in converged],
        [structures[i].info.get("pseudo_energy_per_atom") for i in converged],
        keep,
        **options,
    )
    for group in groups:
        group.members = [converged[k] for k in group.members]
    return groups, beyond


def ranked_table(structures: Sequence[Atoms], groups: list[Distinct], beyond: int, symprec: float = 0.1) -> str:
    """The ranked distinct structures as a plain-text table: Ẽ, how many tries found each, group."""
    converged = sum(bool(a.info.get("converged", True)) for a in structures)
    lines = [f"{len(groups)} lowest distinct structures of {converged} converged tries "
             f"(of {len(structures)}); {beyond} converged tries in structures ranked below them",
             f"{'rank':>4}  {'Ẽ (eV/atom)':>12}  {'found by':>8}  {'try':>5}  space group"]
    for rank, group in enumerate(groups, 1):
        atoms = structures[group.index]
        cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
        with quiet_spglib():
            symbol = spglib.get_spacegroup(cell, symprec=symprec) or "-"
        lines.append(f"{rank:>4}  {group.energy:>12.5f}  {group.count:>8}  "
                     f"{atoms.info.get('index', group.index):>5}  {symbol}")
    return "\n".join(lines)


@dataclass
class RankedTries:
    """A run's converged tries grouped and ranked (``rank_run``): the table to print and the
    ranked structures to write, each with its rank and how many tries found it."""

    source: str
    structures: list[Atoms]
    groups: list[Distinct]
    beyond: int

    def table(self) -> str:
        return ranked_table(self.structures, self.groups, self.beyond)

    def ranked(self) -> list[Atoms]:
        out = []
        for rank, group in enumerate(self.groups, 1):
            atoms = self.structures[group.index].copy()
            atoms.info.update(rank=rank, found_by=group.count)
            out.append(atoms)
        return out

    def write(self, path: str | Path) -> Path:
        """The ranked structures to extxyz (``generate --ranked-out``), checked as every output is."""
        path = check_output(path, inputs=[self.source], option="--ranked-out", kind="structures")
        with atomic_path(path) as temporary:
            write(temporary, self.ranked(), format="extxyz")
        return path


def rank_run(run: str | Path, keep: int | None = None) -> RankedTries:
    """The ``keep`` lowest-Ẽ distinct structures of a stored run (``generate --keep``)."""
    structures = read_run(run)
    groups, beyond = rank_tries(structures, keep=keep)
    return RankedTries(str(run), structures, groups, beyond)
