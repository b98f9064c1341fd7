"""Crystal matching every stage shares: the CSP tolerances, ASE → pymatgen, distinct structures.

Two crystals are one structure when pymatgen's ``StructureMatcher`` with the tolerances of CDVAE,
DiffCSP and FlowMM (stol 0.5, ltol 0.3, angle_tol 10°) fits them.  ``group_distinct`` groups the
tries of one composition into distinct structures as AIRSS reports a search: in order of Ẽ, each
group keeping its members (how many tries found it: its find count) with the lowest-Ẽ member
first.  A try is compared only with groups whose lowest Ẽ lies within ``energy_window`` of its
own: tries that reach one minimum end at one Ẽ, so the window saves most of the fits (grouping
500 tries pairwise would take minutes per formula); two tries farther apart in Ẽ count as
distinct even where the loose CSP tolerances would join them.  With ``keep=K`` only the K lowest
groups are formed; a try that matches none of them belongs to a group ranked below K and is only
counted.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ase import Atoms
from pymatgen.core import Composition, Structure
from pymatgen.core.structure_matcher import StructureMatcher
from pymatgen.io.ase import AseAtomsAdaptor

from respmatch.errors import RespmatchError

MATCHER_TOLERANCES = {"stol": 0.5, "ltol": 0.3, "angle_tol": 10}  # CDVAE / DiffCSP / FlowMM
ENERGY_WINDOW = 0.02  # eV/atom of Ẽ within which two tries may be one structure


def csp_matcher() -> StructureMatcher:
    return StructureMatcher(**MATCHER_TOLERANCES)


def to_structure(atoms: Atoms) -> Structure:
    """A periodic ``Atoms`` as a pymatgen ``Structure`` (numbers, positions and cell only)."""
    if not atoms.pbc.all():
        raise RespmatchError(f"{atoms.get_chemical_formula()}: crystal evaluation needs periodic structures")
    # Without info and calculator: pymatgen would copy them into site properties on every fit.
    return AseAtomsAdaptor.get_structure(Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True))


def reduced_formula(atoms: Atoms) -> str:
    return Composition(atoms.get_chemical_formula()).reduced_formula


def by_formula(structures: Iterable[Atoms], formulas: set[str]) -> dict[str, list[Structure]]:
    """The structures whose reduced formula is one of ``formulas``, as pymatgen structures."""
    found = defaultdict(list)
    for atoms in structures:
        formula = reduced_formula(atoms)
        if formula in formulas:
            found[formula].append(to_structure(atoms))
    return dict(found)


def best_rms(matcher: StructureMatcher, crystal: Structure, references: list[Structure]) -> float | None:
    """Smallest normalised RMS displacement to any matching reference, None if none matches
    (``get_rms_dist`` is not None: CDVAE's criterion)."""
    found = [float(result[0]) for result in (matcher.get_rms_dist(crystal, ref) for ref in references) if result]
    return min(found, default=None)


@dataclass
class Distinct:
    """One distinct structure: its members (indices of the tries), lowest-Ẽ member first."""

    energy: float  # lowest Ẽ per atom among the members
    members: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many tries found this structure."""
        return len(self.members)

    @property
    def index(self) -> int:
        """Its best (lowest-Ẽ) member."""
        return self.members[0]


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
    matcher = matcher or csp_matcher()
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
