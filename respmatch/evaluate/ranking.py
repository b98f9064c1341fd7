"""A ranked search budget: M tries of one composition grouped into distinct structures, ranked.

As AIRSS reports a search, the converged tries are grouped into distinct structures
(``respmatch.matching.group_distinct``: the CSP tolerances, in order of Ẽ) and the groups ranked
by the lowest Ẽ per atom among their members; how many tries found a structure is read as
confidence in it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ase import Atoms

from respmatch.matching import Distinct, group_distinct, to_structure
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
