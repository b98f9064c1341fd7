"""Judge generated structures (DESIGN §1.4): molecules with RDKit, crystals with pymatgen and
spglib, carbon by coordination and known allotropes."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.evaluate.load import load_generated
from respmatch.evaluate.physical import judge_crystals, judge_molecules, rechecked, reference_energies
from respmatch.evaluate.result import Evaluation

KINDS = ("molecule", "crystal", "carbon")
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
    if kind not in KINDS:
        raise RespmatchError(f"unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    if rank_by not in RANK_BY:
        raise RespmatchError(f"unknown ranking {rank_by!r} (choose from {', '.join(RANK_BY)})")
    structures = load_generated(source)
    reference = load_generated(reference) if reference is not None else None
    training = load_generated(training) if training is not None else None
    physical = rechecked(structures)
    if rank_by == "physical" and not physical:
        raise RespmatchError(f"{source}: no re-check results to rank by (run respmatch recheck first)")
    if kind == "molecule":
        from respmatch.evaluate.molecules import evaluate_molecules

        evaluation = evaluate_molecules(structures, training=training)
        if physical:
            judge_molecules(evaluation, structures, training)
        return evaluation
    if kind == "crystal":
        from respmatch.evaluate.crystals import evaluate_crystals

        evaluation = evaluate_crystals(structures, reference=reference, training=training, rank_by=rank_by)
        if physical:
            judge_crystals(evaluation, structures, reference, reference_energies(structures, reference))
        return evaluation
    from respmatch.evaluate.carbon import evaluate_carbon

    return evaluate_carbon(structures, reference=reference)


__all__ = ["KINDS", "RANK_BY", "Evaluation", "evaluate", "load_generated"]
