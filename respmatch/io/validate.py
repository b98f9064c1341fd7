"""Sanity checks that every training structure must pass.

Bad structures (overlapping atoms, missing cells, NaNs) otherwise surface much
later as NaN losses or crashes deep inside the model, far from the file that
caused them, so they are rejected here with a message naming the record.
"""

import numpy as np
from ase import Atoms

from respmatch.elements import MAX_Z
from respmatch.errors import RespmatchError
from respmatch.neighbors import neighbor_pairs

MIN_CELL_VOLUME = 1e-6  # |det(cell)| below this means there is no usable cell


class StructureError(RespmatchError):
    """A structure or file that cannot be used; the message names file, record and problem."""


def is_periodic(atoms: Atoms) -> bool:
    """True for a crystal (all pbc), False for a molecule (no pbc); mixed pbc is an error."""
    if atoms.pbc.all():
        return True
    if not atoms.pbc.any():
        return False
    raise StructureError(f"partially periodic structures are not supported (pbc={atoms.pbc.tolist()})")


def validate_structure(atoms: Atoms, where: str, *, min_distance: float = 0.5) -> None:
    """Raise StructureError(f"{where}: ...") if `atoms` is unusable for training.

    `min_distance` (Å) is the closest two atoms, periodic images included, may be;
    0 disables the overlap check.
    """
    if len(atoms) == 0:
        raise StructureError(f"{where}: no atoms")

    numbers = atoms.numbers
    bad = np.flatnonzero((numbers < 1) | (numbers > MAX_Z))
    if bad.size:
        i = bad[0]
        raise StructureError(
            f"{where}: unknown element: atom {i} has atomic number {numbers[i]} "
            f"(supported: 1..{MAX_Z})"
        )

    bad = np.flatnonzero(~np.isfinite(atoms.positions).all(axis=1))
    if bad.size:
        raise StructureError(f"{where}: NaN or inf in positions (atom {bad[0]})")
    cell = atoms.cell.array
    if not np.isfinite(cell).all():
        raise StructureError(f"{where}: NaN or inf in cell")

    try:
        periodic = is_periodic(atoms)
    except StructureError as exc:
        raise StructureError(f"{where}: {exc}") from None
    if periodic and abs(np.linalg.det(cell)) < MIN_CELL_VOLUME:
        raise StructureError(
            f"{where}: periodic structure without a cell (pbc is True but the cell is zero or singular)"
        )

    if min_distance > 0:
        _check_overlaps(atoms, where, periodic, min_distance)


def _check_overlaps(atoms: Atoms, where: str, periodic: bool, min_distance: float) -> None:
    """Reject atoms closer than `min_distance`, including across periodic boundaries."""
    i, j, d = neighbor_pairs(
        atoms.positions, atoms.cell.array, periodic, min_distance, full=False, quantities="ijd"
    )
    if len(d) == 0:
        return
    k = np.argmin(d)
    if i[k] == j[k]:
        pair = f"atom {i[k]} and its own periodic image"
    else:
        pair = f"atoms {i[k]} and {j[k]}"
    raise StructureError(
        f"{where}: overlapping atoms: {pair} are {d[k]:.3f} Å apart (minimum {min_distance} Å)"
    )
