"""What a molecule prediction hands the user: one file per ranked isomer, ``DIR/FORMULA/RANK.sdf``
(RDKit's SDWriter, bonds as the package's judge perceived them) or ``RANK.xyz`` (ASE), each
holding the isomer's conformers, lowest energy first, and written whole or not at all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ase import Atoms
from ase.io import write
from rdkit import Chem

from respmatch.chem import perceive
from respmatch.files import atomic_path
from respmatch.predict.output import ranked_paths

EV = "GFN2-xTB energy (eV)"


def write_sdf(path: Path, formula: str, rank: int, isomer: dict, conformers: list[Atoms]) -> None:
    with atomic_path(path) as temporary, Chem.SDWriter(str(temporary)) as writer:
        for number, (conformer, atoms) in enumerate(zip(isomer["conformers"], conformers), 1):
            mol = perceive(atoms)
            mol.SetProp("_Name", f"{formula} rank {rank} conformer {number}")
            mol.SetProp("SMILES", isomer["smiles"])
            mol.SetDoubleProp(EV, conformer["energy"])
            mol.SetDoubleProp("E above lowest isomer (eV)", conformer["energy"] - isomer["energy"] + isomer["above_lowest"])
            mol.SetIntProp("found by", conformer["found"])
            writer.write(mol)


def write_xyz(path: Path, formula: str, rank: int, isomer: dict, conformers: list[Atoms]) -> None:
    for conformer, atoms in zip(isomer["conformers"], conformers):
        atoms.info.update(smiles=isomer["smiles"], energy_eV=conformer["energy"], found=conformer["found"])
    with atomic_path(path) as temporary:
        write(temporary, conformers, format="extxyz")


WRITERS = {"sdf": write_sdf, "xyz": write_xyz}


def write_isomers(folder: str | Path, suffix: str, rankings: dict[str, list[dict]],
                  structure: Callable[[str], Atoms]) -> list[Path]:
    """``folder/FORMULA/RANK.suffix`` for every ranked isomer (rank 1 the lowest energy);
    ``structure(key)`` is a conformer's relaxed geometry.  The paths written."""
    written = []
    for path, formula, rank, isomer in ranked_paths(folder, rankings, suffix):
        WRITERS[suffix](path, formula, rank, isomer, [structure(c["best"]) for c in isomer["conformers"]])
        written.append(path)
    return written
