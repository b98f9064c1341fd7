"""Symmetry-preserving relaxation (``--keep-symmetry``): symmetrised forces and stress.

What ASE's ``FixSymmetry`` constraint does to one structure, done to a whole batch at once.
The symmetry operations and the atom each one maps every atom onto come from ASE's
``prep_symmetry`` (spglib) at the start of each stage; only the averaging over operations is
written here, as flat tensors over (operation, atom) pairs of every structure in the batch,
because ASE's ``symmetrize_rank1/rank2`` loop in numpy over one structure's operations: called
per structure at every step they would cost more than the model call they follow.  With forces
and stress symmetrised, FIRE's velocities and steps stay in the symmetric subspace, so the
space group of a start is kept through the relaxation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.spacegroup.symmetrize import prep_symmetry

from respmatch.symmetry import quiet_spglib

SYMPREC = 0.01  # Å, FixSymmetry's default


def symmetry_of(atoms: Atoms, symprec: float = SYMPREC) -> tuple[np.ndarray, np.ndarray]:
    """Fractional rotations (P, 3, 3) and the atom each operation maps each atom onto (P, N)."""
    with quiet_spglib():
        rotations, _, mapping = prep_symmetry(atoms, symprec=symprec)
    return rotations, np.asarray(mapping)


@dataclass
class BatchSymmetry:
    """The operations of every structure in a batch, flattened (P operations, M = Σ P_b·N_b pairs)."""

    rotation: torch.Tensor  # (P, 3, 3) fractional rotations
    op_system: torch.Tensor  # (P,) structure of each operation
    n_ops: torch.Tensor  # (B,)
    pair_op: torch.Tensor  # (M,) operation of each (operation, atom) pair
    source: torch.Tensor  # (M,) atom (batch index)
    target: torch.Tensor  # (M,) atom the operation maps it onto (batch index)
    system: torch.Tensor  # (N,) structure of each atom

    @classmethod
    def build(cls, symmetries: list[tuple[np.ndarray, np.ndarray]], dtype, device) -> BatchSymmetry:
        """From ``symmetry_of`` of each structure, in batch order."""
        rotations, op_system, pair_op, source, target, system = [], [], [], [], [], []
        first_atom = first_op = 0
        for b, (rotation, mapping) in enumerate(symmetries):
            n_ops, n_atoms = mapping.shape
            rotations.append(rotation)
            op_system.append(np.full(n_ops, b))
            pair_op.append(np.repeat(np.arange(n_ops), n_atoms) + first_op)
            source.append(np.tile(np.arange(n_atoms), n_ops) + first_atom)
            target.append(mapping.reshape(-1) + first_atom)
            system.append(np.full(n_atoms, b))
            first_atom, first_op = first_atom + n_atoms, first_op + n_ops

        def tensor(parts, kind=torch.long):
            return torch.as_tensor(np.concatenate(parts), dtype=kind, device=device)

        op_system = tensor(op_system)
        return cls(
            rotation=tensor(rotations, dtype),
            op_system=op_system,
            n_ops=torch.bincount(op_system, minlength=len(symmetries)),
            pair_op=tensor(pair_op),
            source=tensor(source),
            target=tensor(target),
            system=tensor(system),
        )

    def forces(self, cell: torch.Tensor, forces: torch.Tensor) -> torch.Tensor:
        """ASE's symmetrize_rank1: F → mean over operations of R·F (fractional), onto mapped atoms."""
        structure = self.op_system[self.pair_op]
        scaled = torch.einsum("ma,mab->mb", forces[self.source], torch.linalg.inv(cell)[structure])
        rotated = torch.einsum("mb,mcb->mc", scaled, self.rotation[self.pair_op])
        total = torch.zeros_like(forces).index_add(0, self.target, rotated)
        total = total / self.n_ops[self.system, None].to(forces.dtype)
        return torch.einsum("na,nab->nb", total, cell[self.system])

    def stress(self, cell: torch.Tensor, stress: torch.Tensor) -> torch.Tensor:
        """ASE's symmetrize_rank2: σ → H⁻¹ · mean over operations of Rᵀ (H σ Hᵀ) R · H⁻ᵀ."""
        scaled = (cell @ stress @ cell.transpose(1, 2))[self.op_system]
        rotated = self.rotation.transpose(1, 2) @ scaled @ self.rotation
        total = torch.zeros_like(stress).index_add(0, self.op_system, rotated)
        total = total / self.n_ops[:, None, None].to(stress.dtype)
        inverse = torch.linalg.inv(cell)
        return inverse @ total @ inverse.transpose(1, 2)
