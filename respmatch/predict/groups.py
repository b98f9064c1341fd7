"""Distinct structures, twice: the search's tries before the physics, the relaxed candidates after.

Both use the CSP tolerances and the grouping of ``evaluate.ranking`` (StructureMatcher, in order
of energy, within an energy window).  After relaxation two candidates that the search told apart
may have relaxed into one minimum: the final ranking counts them once, with how many candidates
relaxed into it and how many tries found those candidates.
"""

from __future__ import annotations

import spglib
from ase import Atoms

from respmatch.evaluate.ranking import rank_tries
from respmatch.matching import group_distinct, to_structure
from respmatch.symmetry import quiet_spglib

SYMPREC = 0.1  # Å, spglib's tolerance for the space group of a relaxed structure


def distinct_tries(tries: list[Atoms]) -> list[dict]:
    """Groups of the converged tries of one formula, lowest Ẽ first: the lowest Ẽ per atom, how
    many tries found the group and their run indices (the lowest-Ẽ member first)."""
    groups, _ = rank_tries(tries)
    return [
        {"energy": group.energy, "count": group.count, "members": [int(tries[m].info["index"]) for m in group.members]}
        for group in groups
    ]


def space_group(atoms: Atoms) -> str:
    with quiet_spglib():
        return spglib.get_spacegroup((atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers), symprec=SYMPREC) or "-"


def final_ranking(candidates: list[dict]) -> list[dict]:
    """Relaxed candidates of one formula grouped and ranked by physical energy per atom.

    A candidate: ``group`` (its place among the distinct tries), ``count`` and ``energy`` (Ẽ)
    of that group, and ``result`` (a ``records.Relaxation``).  Candidates the potential failed
    on are left out."""
    usable = [c for c in candidates if c["result"].energy_per_atom is not None]
    structures = [c["result"].atoms() for c in usable]
    groups, _ = group_distinct([to_structure(a) for a in structures], [c["result"].energy_per_atom for c in usable])
    ranking = []
    for group in groups:
        members = [usable[m] for m in group.members]
        best = members[0]
        ranking.append({
            "energy_per_atom": group.energy,
            "above_lowest": group.energy - groups[0].energy,
            "space_group": space_group(structures[group.index]),
            "found": sum(m["count"] for m in members),
            "pseudo_energy_per_atom": min(m["energy"] for m in members),
            "relaxed_into": len(members),
            "candidates": [m["group"] for m in members],
            "converged": best["result"].converged,
            "best": best["group"],
        })
    return ranking
