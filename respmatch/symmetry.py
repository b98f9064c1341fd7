"""spglib helpers every stage may use: quiet calls, space groups of ASE and pymatgen structures.

spglib 2.5+ raises a DeprecationWarning about its own error-handling switch on every call
(pymatgen's SpacegroupAnalyzer included); ``quiet_spglib`` silences that warning, and only it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import spglib
from ase import Atoms

SYMPREC = 0.1  # Å, the tolerance the judges and the ranked table use


@contextmanager
def quiet_spglib():
    """Silence spglib's ``OLD_ERROR_HANDLING`` DeprecationWarning, and only that, for a block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*OLD_ERROR_HANDLING", category=DeprecationWarning)
        yield


def spglib_cell(atoms: Atoms) -> tuple:
    return (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)


def space_group_symbol(atoms: Atoms, symprec: float = SYMPREC) -> str | None:
    """International symbol with number, e.g. 'Fd-3m (227)'; None where spglib finds none."""
    with quiet_spglib():
        return spglib.get_spacegroup(spglib_cell(atoms), symprec=symprec)


def space_group(crystal, symprec: float = SYMPREC) -> tuple[str | None, int | None]:
    """(international symbol, number) of a pymatgen structure, (None, None) where spglib finds none."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer, SymmetryUndeterminedError

    try:
        with quiet_spglib():
            analyzer = SpacegroupAnalyzer(crystal, symprec=symprec)
            return analyzer.get_space_group_symbol(), analyzer.get_space_group_number()
    except SymmetryUndeterminedError:
        return None, None


def symmetry_key(atoms: Atoms, symprec: float = SYMPREC) -> tuple[int, int]:
    """(space group number, atoms in the primitive cell); (0, n) when spglib finds nothing.

    Structures with different keys can be treated as different without running StructureMatcher:
    grouping hundreds of structures pairwise would otherwise dominate an evaluation's time.
    """
    cell = spglib_cell(atoms)
    with quiet_spglib():
        dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
        primitive = spglib.find_primitive(cell, symprec=symprec)
    if dataset is None:
        return (0, len(atoms))
    return (int(dataset.number), len(primitive[2]) if primitive is not None else len(atoms))
