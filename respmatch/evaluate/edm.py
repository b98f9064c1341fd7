"""Molecule metrics as EDM computes them (Hoogeboom et al. 2022, ``qm9/analyze.py`` and
``qm9/rdkit_functions.py`` of e3_diffusion_for_molecules), so QM9 figures compare with theirs.

- *Bond orders* from distances alone: an element pair is bonded (order 1) below its tabulated
  single-bond length + 10 pm, double below the double-bond length + 5 pm, triple below the
  triple-bond length + 3 pm (tables below, from EDM's ``bond_analyze.py``; margins tuned by EDM
  on QM9 itself).  Hydrogens count as atoms like any other.
- *Atom stability*: an atom is stable when the sum of its bond orders equals its element's
  valence (H 1, C 4, N 3, O 2, F 1, S 4, Cl 1); the metric is stable atoms / all atoms, pooled.
- *Molecule stability*: the share of molecules all of whose atoms are stable.
- *RDKit validity*: those bonds, with their orders, put into an RDKit molecule of neutral atoms
  that must sanitise (implicit hydrogens may fill a missing valence); the SMILES is that of the
  largest fragment.  Validity is the share of molecules that sanitise.
- *Uniqueness*: distinct SMILES among the valid ones, over the valid ones.

Written here because EDM is a research code base, not a library: the tables and rules are copied
as data so that no one has to install it.  Our own judge (``respmatch.evaluate.molecules``) is
stricter: it perceives bond orders with RDKit's xyz2mol and needs one whole fragment.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from respmatch.errors import RespmatchError

# Bond lengths in pm (EDM's bonds1/bonds2/bonds3, restricted to the elements of QM9 and QM7).
SINGLE = {
    "H": {"H": 74, "C": 109, "N": 101, "O": 96, "F": 92, "S": 134, "Cl": 127},
    "C": {"H": 109, "C": 154, "N": 147, "O": 143, "F": 135, "S": 182, "Cl": 177},
    "N": {"H": 101, "C": 147, "N": 145, "O": 140, "F": 136, "S": 168, "Cl": 175},
    "O": {"H": 96, "C": 143, "N": 140, "O": 148, "F": 142, "S": 151, "Cl": 164},
    "F": {"H": 92, "C": 135, "N": 136, "O": 142, "F": 142, "S": 158, "Cl": 166},
    "S": {"H": 134, "C": 182, "N": 168, "O": 151, "F": 158, "S": 204, "Cl": 207},
    "Cl": {"H": 127, "C": 177, "N": 175, "O": 164, "F": 166, "S": 207, "Cl": 199},
}
DOUBLE = {
    "C": {"C": 134, "N": 129, "O": 120, "S": 160},
    "N": {"C": 129, "N": 125, "O": 121},
    "O": {"C": 120, "N": 121, "O": 121},
    "S": {"C": 160},
}
TRIPLE = {"C": {"C": 120, "N": 116, "O": 113}, "N": {"C": 116, "N": 110}, "O": {"C": 113}}
MARGINS = (10, 5, 3)  # pm, added to the single, double and triple lengths
VALENCE = {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1, "S": 4, "Cl": 1}
RDKIT_BOND = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}

# Published QM9 figures (with hydrogens, 10,000 samples each): atom stability, molecule
# stability, RDKit validity, valid and unique, all in %.
PUBLISHED = {
    "EDM (Hoogeboom et al. 2022)": {"atom_stable": 98.7, "molecule_stable": 82.0, "rdkit_valid": 91.9, "valid_unique": 90.7},
    "GeoLDM (Xu et al. 2023)": {"atom_stable": 98.9, "molecule_stable": 89.4, "rdkit_valid": 93.8, "valid_unique": 92.7},
}


def bond_order(first: str, second: str, distance: float) -> int:
    """EDM's bond order (0-3) of an element pair at ``distance`` Å."""
    try:
        single = SINGLE[first][second]
    except KeyError:
        raise RespmatchError(f"EDM's bond tables have no {first}-{second} bond") from None
    pm = 100 * distance
    if pm >= single + MARGINS[0]:
        return 0
    if pm >= DOUBLE.get(first, {}).get(second, -np.inf) + MARGINS[1]:
        return 1
    if pm >= TRIPLE.get(first, {}).get(second, -np.inf) + MARGINS[2]:
        return 2
    return 3


def bonds(atoms: Atoms) -> list[tuple[int, int, int]]:
    """Every bonded pair (i, j, order), i < j, over all pairs of atoms."""
    symbols = atoms.get_chemical_symbols()
    distances = atoms.get_all_distances()
    found = []
    for i in range(len(atoms)):
        for j in range(i + 1, len(atoms)):
            order = bond_order(symbols[i], symbols[j], distances[i, j])
            if order:
                found.append((i, j, order))
    return found


def stable_atoms(atoms: Atoms, found: list[tuple[int, int, int]]) -> np.ndarray:
    """(N,) bool: the atom's bond orders sum to its element's valence."""
    total = np.zeros(len(atoms), dtype=int)
    for i, j, order in found:
        total[i] += order
        total[j] += order
    return np.array([VALENCE[s] == n for s, n in zip(atoms.get_chemical_symbols(), total)], dtype=bool)


def largest_fragment_smiles(atoms: Atoms, found: list[tuple[int, int, int]]) -> str | None:
    """SMILES of the largest fragment of EDM's RDKit molecule, or None if it does not sanitise."""
    mol = Chem.RWMol()
    for symbol in atoms.get_chemical_symbols():
        mol.AddAtom(Chem.Atom(symbol))
    for i, j, order in found:
        mol.AddBond(i, j, RDKIT_BOND[order])
    try:
        Chem.SanitizeMol(mol)
        fragments = Chem.GetMolFrags(mol, asMols=True)
        largest = max(fragments, key=lambda m: m.GetNumAtoms())
        Chem.SanitizeMol(largest)
        return Chem.MolToSmiles(largest)
    except Exception:  # RDKit raises several types for impossible valences
        return None


def edm_record(atoms: Atoms) -> dict:
    """One molecule: stable atoms, whether all are, and the largest fragment's SMILES."""
    found = bonds(atoms)
    stable = stable_atoms(atoms, found)
    smiles = largest_fragment_smiles(atoms, found)
    return {
        "n_atoms": len(atoms),
        "n_stable_atoms": int(stable.sum()),
        "molecule_stable": bool(stable.all()),
        "edm_smiles": smiles,
    }


def edm_metrics(structures: list[Atoms]) -> dict:
    """Atom and molecule stability, RDKit validity, uniqueness and valid × unique, as fractions."""
    if not structures:
        raise RespmatchError("no molecules to evaluate")
    _quiet = BlockLogs()
    records = [edm_record(atoms) for atoms in structures]
    valid = [r["edm_smiles"] for r in records if r["edm_smiles"] is not None]
    n = len(records)
    return {
        "n": n,
        "atom_stable": sum(r["n_stable_atoms"] for r in records) / sum(r["n_atoms"] for r in records),
        "molecule_stable": sum(r["molecule_stable"] for r in records) / n,
        "rdkit_valid": len(valid) / n,
        "unique": len(set(valid)) / len(valid) if valid else float("nan"),
        "valid_unique": len(set(valid)) / n,
    }
