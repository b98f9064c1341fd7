"""Judge generated structures (docs/design.md §1.4): molecules with RDKit, crystals with pymatgen
and spglib, carbon by coordination and known allotropes; one judge per kind (``JUDGES``)."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.evaluate.judges import JUDGES, judge_for
from respmatch.evaluate.result import Evaluation
from respmatch.run import load_generated

KINDS = tuple(JUDGES)
RANK_BY = ("pseudo", "physical")


def evaluate(
    source: str | Path | list[Atoms],
    kind: str,
    *,
    reference: str | Path | list[Atoms] | None = None,
    training: str | Path | list[Atoms] | None = None,
    rank_by: str = "pseudo",
) -> Evaluation:
    """Evaluate generated structures (a run database, a structure file or Atoms) of one kind.

    Where ``respmatch recheck`` left results, the physical judgement is added
    (respmatch.evaluate.physical); ``rank_by="physical"`` picks each crystal formula's "1 try"
    by physical energy instead of Ẽ.
    """
    judge = judge_for(kind)
    if rank_by not in RANK_BY:
        raise RespmatchError(f"unknown ranking {rank_by!r} (choose from {', '.join(RANK_BY)})")
    structures = load_generated(source)
    reference = load_generated(reference) if reference is not None else None
    training = load_generated(training) if training is not None else None
    physical = any("physical_potential" in atoms.info for atoms in structures)
    if rank_by == "physical" and not physical:
        raise RespmatchError(f"{source}: no re-check results to rank by (run respmatch recheck first)")
    evaluation = judge.evaluate(structures, reference, training, rank_by)
    if physical:
        judge.add_physical(evaluation, structures, reference, training)
    return evaluation


__all__ = ["JUDGES", "KINDS", "RANK_BY", "Evaluation", "evaluate", "load_generated"]
