"""Judge generated molecules as the paper did (DESIGN §1.4): bonds perceived from 3D coordinates.

Bonds and bond orders come from RDKit's ``rdDetermineBonds.DetermineBonds`` (the xyz2mol method,
connect-the-dots connectivity) with total charge 0 and formal charges allowed where the bond
orders need them.  A structure is

- *strictly valid* if perception succeeds, the molecule sanitises, it is one connected fragment
  (hydrogens included) and no atom carries a formal charge or a radical electron;
- *leniently valid* if the same holds with formal charges allowed (net charge still 0: charge-
  separated species such as nitromethane, ``C[N+](=O)[O-]``); radicals are still refused.

Any RDKit failure (no bond ordering with charge 0, impossible valence, unparsable coordinates)
makes a structure invalid, never stops the evaluation.  Molecules are compared by canonical
SMILES of their constitution (hydrogens implicit, no stereochemistry): uniqueness is the share of
distinct SMILES among strictly valid structures, novelty the share of those distinct SMILES that
no training molecule (perceived the same way) has.  Every metric is given over all tries and,
with the suffix ``_converged``, over converged structures only, which is what the paper kept
(a structure without a ``converged`` flag counts as converged: ``respmatch.record.judged_fields``).
"""

from __future__ import annotations

from ase import Atoms
from rdkit import Chem
from rdkit.Chem import rdDetermineBonds
from rdkit.rdBase import BlockLogs

from respmatch.evaluate.result import Evaluation, share
from respmatch.record import judged_fields


def perceive(atoms: Atoms) -> Chem.Mol | None:
    """The sanitised RDKit molecule of a 3D structure (total charge 0), or None if it has none."""
    symbols = atoms.get_chemical_symbols()
    lines = [str(len(atoms)), ""]
    lines += [f"{s} {x:.8f} {y:.8f} {z:.8f}" for s, (x, y, z) in zip(symbols, atoms.positions)]
    try:
        mol = Chem.MolFromXYZBlock("\n".join(lines) + "\n")
        if mol is None:
            return None
        rdDetermineBonds.DetermineBonds(mol, charge=0)
        Chem.SanitizeMol(mol)
        return mol
    except Exception:  # RDKit raises ValueError, RuntimeError and its own types alike
        return None


def judge(atoms: Atoms) -> dict:
    """Canonical SMILES (None when perception fails), strict and lenient validity of a structure."""
    invalid = {"smiles": None, "strict": False, "lenient": False}
    mol = perceive(atoms)
    if mol is None:
        return invalid
    try:
        smiles = Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)
    except Exception:
        return invalid
    one_fragment = len(Chem.GetMolFrags(mol)) == 1
    radical = any(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
    charged = any(a.GetFormalCharge() for a in mol.GetAtoms())
    lenient = one_fragment and not radical
    return {"smiles": smiles, "strict": lenient and not charged, "lenient": lenient}


def canonical_smiles(structures: list[Atoms]) -> set[str]:
    """Canonical SMILES of every structure whose bonds can be perceived (training molecules)."""
    _quiet = BlockLogs()  # RDKit logs every failed perception; restored when this returns
    return {s for s in (judge(a)["smiles"] for a in structures) if s is not None}


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
