"""Many structures (molecules or crystals, any sizes) held as one set of flat tensors.

Atoms of all structures are concatenated; ``system`` says which structure each atom belongs to.
This is the batched state that labels, the model and the relaxer all work on, in the manner of
torch-sim's ``SimState``: ASE ``Atoms`` at the boundaries, tensors inside.  A batch is never
changed in place (``dataclasses.replace`` makes a new one), which is what lets derived indices
such as ``system`` be computed once per batch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from functools import cached_property

import numpy as np
import torch
from ase import Atoms

# Fields indexed by atom rather than by structure (in this class and its subclasses).
PER_ATOM = {"positions", "numbers", "forces"}

@dataclass
class Structures:
    positions: torch.Tensor  # (N, 3) Å
    numbers: torch.Tensor  # (N,) atomic numbers
    cell: torch.Tensor  # (B, 3, 3) rows are lattice vectors; zeros for molecules
    periodic: torch.Tensor  # (B,) bool: fully periodic crystal or molecule
    n_atoms: torch.Tensor  # (B,) atoms per structure

    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    @cached_property
    def system(self) -> torch.Tensor:
        """Index of the structure that each atom belongs to, (N,); computed once per batch."""
        return torch.repeat_interleave(
            torch.arange(self.n_structures, device=self.n_atoms.device), self.n_atoms, output_size=len(self.numbers)
        )

    @property
    def first_atom(self) -> torch.Tensor:
        """Index of each structure's first atom, (B,)."""
        return torch.cumsum(self.n_atoms, 0) - self.n_atoms

    def volume(self) -> torch.Tensor:
        """Cell volume of each structure, (B,); zero for molecules."""
        return torch.linalg.det(self.cell).abs()

    @classmethod
    def from_atoms(
        cls, atoms_list: list[Atoms], dtype=torch.float64, device="cpu"
    ) -> Structures:
        def as_tensor(value, kind=dtype):
            return torch.as_tensor(np.asarray(value), dtype=kind, device=device)

        periodic = [bool(a.pbc.all()) for a in atoms_list]
        cells = [a.cell.array if p else np.zeros((3, 3)) for a, p in zip(atoms_list, periodic)]
        return cls(
            positions=as_tensor(np.concatenate([a.positions for a in atoms_list]).reshape(-1, 3)),
            numbers=as_tensor(np.concatenate([a.numbers for a in atoms_list]), torch.long),
            cell=as_tensor(np.stack(cells)).reshape(-1, 3, 3),
            periodic=as_tensor(periodic, torch.bool),
            n_atoms=as_tensor([len(a) for a in atoms_list], torch.long),
        )

    def to_atoms(self) -> list[Atoms]:
        positions = self.positions.detach().cpu().numpy().astype(np.float64)
        numbers = self.numbers.cpu().numpy()
        cells = self.cell.detach().cpu().numpy().astype(np.float64)
        out = []
        for b, (start, n) in enumerate(zip(self.first_atom.tolist(), self.n_atoms.tolist())):
            periodic = bool(self.periodic[b])
            out.append(
                Atoms(
                    numbers=numbers[start : start + n],
                    positions=positions[start : start + n],
                    cell=cells[b] if periodic else None,
                    pbc=periodic,
                )
            )
        return out

    def select(self, index: torch.Tensor | list[int]) -> Structures:
        """A new batch holding the structures ``index`` (in that order)."""
        index = torch.as_tensor(index, dtype=torch.long, device=self.n_atoms.device)
        first, n = self.first_atom[index], self.n_atoms[index]
        atom_index = torch.repeat_interleave(first - torch.cumsum(n, 0) + n, n) + torch.arange(
            int(n.sum()), device=n.device
        )
        return self._take(index, atom_index)

    def _take(self, index: torch.Tensor, atom_index: torch.Tensor) -> Structures:
        """Slice every per-structure field by ``index`` and every per-atom field by ``atom_index``."""
        changes = {
            f.name: getattr(self, f.name)[atom_index if f.name in PER_ATOM else index]
            for f in fields(self)
        }
        return replace(self, **changes)

    def to(self, device=None, dtype=None) -> Structures:
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            kind = dtype if (dtype is not None and value.is_floating_point()) else value.dtype
            changes[f.name] = value.to(device=device or value.device, dtype=kind)
        return replace(self, **changes)
