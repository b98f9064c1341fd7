"""A ranked search budget: M tries of one composition grouped into distinct structures, ranked.

As AIRSS reports a search, the converged tries are grouped into distinct structures
(``respmatch.matching.group_distinct``: the CSP tolerances, in order of Ẽ) and the groups ranked
by the lowest Ẽ per atom among their members; how many tries found a structure is read as
confidence in it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms
from ase.io import write

from respmatch.files import atomic_path, check_output
from respmatch.matching import Distinct, group_distinct, to_structure
from respmatch.store import read_run
from respmatch.symmetry import SYMPREC, space_group_symbol


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


def ranked_table(structures: Sequence[Atoms], groups: list[Distinct], beyond: int, symprec: float = SYMPREC) -> str:
    """The ranked distinct structures as a plain-text table: Ẽ, how many tries found each, group."""
    converged = sum(bool(a.info.get("converged", True)) for a in structures)
    lines = [f"{len(groups)} lowest distinct structures of {converged} converged tries "
             f"(of {len(structures)}); {beyond} converged tries in structures ranked below them",
             f"{'rank':>4}  {'Ẽ (eV/atom)':>12}  {'found by':>8}  {'try':>5}  space group"]
    for rank, group in enumerate(groups, 1):
        atoms = structures[group.index]
        symbol = space_group_symbol(atoms, symprec) or "-"
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
