"""Relaxed molecules of one formula → isomers (canonical SMILES) → conformers → a ranking.

An isomer is a canonical SMILES of the relaxed geometry, perceived by the package's one judge
(``respmatch.chem``).  Within an isomer, two geometries are one conformer when their RMSD after
the best alignment is below a threshold (0.125 Å by default, CREST's default for telling
conformers apart), all atoms counted and the atom permutations the molecular graph allows tried
(RDKit's ``GetBestRMS``): an energy window alone would merge distinct conformers that happen to
lie close in energy, and an RMSD of heavy atoms alone would merge rotamers that differ only in
where a hydrogen points (ethanol's trans and gauche OH).  Conformers are formed greedily in
order of energy: each geometry joins the lowest conformer it aligns with, or starts its own.
Isomers are ranked by their lowest conformer's energy (total energies: one formula, the same
atoms).
"""

from __future__ import annotations

from rdkit.Chem import rdMolAlign
from rdkit.rdBase import BlockLogs

from respmatch.chem import perceive


def rmsd(a, b) -> float:
    """Best all-atom RMSD (Å) of two RDKit molecules of one constitution (``b`` is not moved)."""
    return rdMolAlign.GetBestRMS(a, b)


def conformers(members: list[dict], threshold: float) -> list[dict]:
    """Members (``key``, ``energy``, ``atoms``) of one isomer grouped into conformers, lowest
    energy first: each conformer's energy, how many members fell into it and its best member."""
    _quiet = BlockLogs()
    found = []  # (representative molecule, conformer)
    for member in sorted(members, key=lambda m: m["energy"]):
        mol = perceive(member["atoms"])
        for reference, conformer in found:
            if rmsd(mol, reference) < threshold:
                conformer["found"] += 1
                break
        else:
            found.append((mol, {"energy": member["energy"], "found": 1, "best": member["key"]}))
    return [conformer for _, conformer in found]


def rank_isomers(relaxed: list[dict], threshold: float) -> list[dict]:
    """Relaxed, strictly valid molecules of one formula (``key``, ``smiles``, ``energy`` in eV,
    ``atoms``) as isomers ranked by energy: SMILES, lowest energy, energy above the formula's
    lowest, how many tries relaxed into it, and its conformers."""
    by_smiles: dict[str, list[dict]] = {}
    for member in relaxed:
        by_smiles.setdefault(member["smiles"], []).append(member)
    isomers = []
    for smiles, members in by_smiles.items():
        found = conformers(members, threshold)
        isomers.append({"smiles": smiles, "energy": found[0]["energy"], "found": len(members), "conformers": found})
    isomers.sort(key=lambda isomer: isomer["energy"])
    for isomer in isomers:
        isomer["above_lowest"] = isomer["energy"] - isomers[0]["energy"]
    return isomers

