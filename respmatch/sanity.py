"""Checks that training data, and what training made of it, can be what the user meant.

A crystal with far too large a cell, or atoms with no neighbour within the cutoff, give labels
the local model cannot fit (such a run trained to a loss of 10¹² and its model then "converged"
every search); a model no better than before training is useless.  Both are refused with the
reason instead of being saved.
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
from ase import Atoms

from respmatch.errors import RespmatchError, RespmatchWarning
from respmatch.io import is_periodic
from respmatch.neighbors import neighbor_pairs

# A validation loss this many times the untrained model's has exploded.
EXPLODED = 1e3


def data_checksum(structures: list[Atoms]) -> str:
    """sha256 of the structures' numbers, positions, cells and periodicity, in order."""
    digest = hashlib.sha256()
    for atoms in structures:
        for array in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _where(atoms: Atoms, k: int) -> str:
    return atoms.info.get("source", f"structure {k}")


def check_structures(structures: list[Atoms], cutoff: float) -> None:
    """Refuse a crystal with more volume per atom than one cutoff sphere, or data in which no
    atom has a neighbour within the cutoff; warn about atoms with no neighbour."""
    sphere = 4 / 3 * math.pi * cutoff**3
    alone, total, first = 0, 0, None
    for k, atoms in enumerate(structures):
        periodic = is_periodic(atoms)
        volume = atoms.get_volume() / len(atoms) if periodic else 0.0
        if volume > sphere:
            raise RespmatchError(
                f"{_where(atoms, k)}: {volume:.0f} Å³ per atom, more than a sphere of the cutoff "
                f"({sphere:.0f} Å³ for {cutoff} Å): the model cannot learn this cell (lengths not "
                "in Å? a molecule in a box should have pbc=False)"
            )
        receivers = neighbor_pairs(atoms.positions, atoms.cell.array, periodic, cutoff, quantities="i")[0]
        lonely = len(atoms) - len(np.unique(receivers))
        if lonely and first is None:
            first = _where(atoms, k)
        alone, total = alone + lonely, total + len(atoms)
    if alone == total:
        raise RespmatchError(
            f"no atom has a neighbour within the cutoff {cutoff} Å, so there is nothing to learn "
            "(lengths not in Å? a larger --model cutoff=?)"
        )
    if alone:
        warnings.warn(
            f"{alone} of {total} atoms (the first in {first}) have no neighbour within the cutoff "
            f"{cutoff} Å; the model learns nothing about them",
            RespmatchWarning,
            stacklevel=2,
        )


def check_learnt(history: list[dict], best: dict, initial: dict, min_improvement: float) -> None:
    """Refuse to save a model that learnt nothing useful: no epoch ran, or its validation loss
    never got below the untrained model's."""
    if not history:
        raise RespmatchError("no training epoch ran (is --epochs already reached?); no model saved")
    if best.get("epoch", -1) < 0 or not best["loss"] < initial["loss"] * (1 - min_improvement):
        raise RespmatchError(
            f"the validation loss never got below the untrained model's ({initial['loss']:.4g}) in "
            f"{len(history)} epochs: the model learnt nothing useful and is not saved "
            "(check the structures, or train longer)"
        )


def check_epoch(epoch: int, train_loss: float, val_loss: float, initial: dict) -> None:
    """Stop a run whose loss is not finite or has exploded: its model would be meaningless."""
    if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
        raise RespmatchError(
            f"training diverged at epoch {epoch} (loss {train_loss:.4g}, validation {val_loss:.4g}); "
            "no model saved (check the structures, or lower --train-option learning_rate)"
        )
    if val_loss > EXPLODED * initial["loss"]:
        raise RespmatchError(
            f"training exploded at epoch {epoch}: validation loss {val_loss:.4g}, "
            f"{val_loss / initial['loss']:.0f} times the untrained model's; no model saved "
            "(check the structures, or lower --train-option learning_rate)"
        )
