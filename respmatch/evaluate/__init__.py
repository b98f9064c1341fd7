"""Judge generated structures (DESIGN §1.4): molecules with RDKit, crystals with pymatgen and
spglib, carbon by coordination and known allotropes."""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.evaluate.load import load_generated
from respmatch.evaluate.result import Evaluation

KINDS = ("molecule", "crystal", "carbon")


def evaluate(
    source: str | Path | list[Atoms],
    kind: str,
    *,
    reference: str | Path | list[Atoms] | None = None,
    training: str | Path | list[Atoms] | None = None,
) -> Evaluation:
    """Evaluate generated structures (a run database, a structure file or Atoms) of one kind."""
    if kind not in KINDS:
        raise RespmatchError(f"unknown kind {kind!r} (choose from {', '.join(KINDS)})")
    structures = load_generated(source)
    reference = load_generated(reference) if reference is not None else None
    training = load_generated(training) if training is not None else None
    if kind == "molecule":
        from respmatch.evaluate.molecules import evaluate_molecules

        return evaluate_molecules(structures, training=training)
    if kind == "crystal":
        from respmatch.evaluate.crystals import evaluate_crystals

        return evaluate_crystals(structures, reference=reference, training=training)
    from respmatch.evaluate.carbon import evaluate_carbon

    return evaluate_carbon(structures, reference=reference)


__all__ = ["KINDS", "Evaluation", "evaluate", "load_generated"]
