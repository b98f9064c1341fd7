"""Judge generated molecules as the paper did (docs/design.md §1.4): bonds perceived from 3D
coordinates by ``respmatch.chem`` (strict and lenient validity, canonical SMILES).

Uniqueness is the share of distinct SMILES among strictly valid structures, novelty the
share of those distinct SMILES that no training molecule (perceived the same way) has.  Every metric is given over all tries and,
with the suffix ``_converged``, over converged structures only, which is what the paper kept
(a structure without a ``converged`` flag counts as converged: ``respmatch.record.judged_fields``).
"""

from __future__ import annotations

from ase import Atoms
from rdkit.rdBase import BlockLogs

from respmatch.chem import canonical_smiles, judge
from respmatch.evaluate.result import Evaluation, share
from respmatch.record import judged_fields


def evaluate_molecules(structures: list[Atoms], training: list[Atoms] | None = None) -> Evaluation:
    """Validity, uniqueness and novelty of generated molecules, overall and per composition."""
    known = canonical_smiles(training) if training is not None else None
    _quiet = BlockLogs()
    records = []
    for position, atoms in enumerate(structures):
        verdict = judge(atoms)
        records.append(
            {
                **judged_fields(atoms, position),
                "composition": atoms.get_chemical_formula(),
                **verdict,
                "novel": None if known is None else verdict["strict"] and verdict["smiles"] not in known,
            }
        )
    converged = metrics([r for r in records if r["converged"]], known)
    del converged["converged"]  # 1 by definition
    summary = {**metrics(records, known), **{f"{k}_converged": v for k, v in converged.items()}}
    groups = {
        composition: metrics([r for r in records if r["composition"] == composition], known)
        for composition in sorted({r["composition"] for r in records})
    }
    return Evaluation(kind="molecule", summary=summary, groups=groups, records=records)


def metrics(records: list[dict], known: set[str] | None) -> dict:
    """Shares over ``records``: converged, strict and lenient validity, uniqueness, novelty."""
    valid = [r["smiles"] for r in records if r["strict"]]
    distinct = set(valid)
    return {
        "n": len(records),
        "converged": share(sum(r["converged"] for r in records), len(records)),
        "strict_valid": share(len(valid), len(records)),
        "lenient_valid": share(sum(r["lenient"] for r in records), len(records)),
        "unique": share(len(distinct), len(valid)),
        "novel": float("nan") if known is None else share(len(distinct - known), len(distinct)),
    }
