"""Rotation-invariant contractions of an atom's Cartesian moments (the ACE "B" features).

The atomic basis A[k, m] holds, per channel k, the neighbour sums of the monomials m of degree
l ≤ l_max.  Expanding each degree into its full symmetric rank-l Cartesian tensor T_l, the
invariants are complete index contractions: T_0 (body order 2), T_l·T_l (order 3), and the
triple contractions T_1T_1T_2, T_2T_2T_2, T_1T_2T_3, T_2T_3T_3 (order 4).  Triple products
that contain T_0 are left to the readout MLP (T_0·T_0 is kept among the squares).  Channels are not mixed (diagonal in k), as in CACE.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from respmatch.model.angular import monomial_exponents

# (einsum over the full tensors T_l1, T_l2, T_l3, the three degrees).
TRIPLE_CONTRACTIONS = (
    ("nka,nkb,nkab->nk", (1, 1, 2)),
    ("nkab,nkbc,nkca->nk", (2, 2, 2)),
    ("nka,nkbc,nkabc->nk", (1, 2, 3)),
    ("nkab,nkacd,nkbcd->nk", (2, 3, 3)),
)


class SymmetricContraction(nn.Module):
    def __init__(self, l_max: int, nu_max: int):
        super().__init__()
        if not 1 <= nu_max <= 3:
            raise ValueError(f"nu_max must be 1, 2 or 3 (got {nu_max})")
        self.l_max, self.nu_max = int(l_max), int(nu_max)
        position = {e: i for i, e in enumerate(monomial_exponents(l_max))}
        for l in range(1, l_max + 1):
            # Monomial index of every entry (i1..il) of the rank-l tensor: count the axes used.
            index = [
                position[tuple(axes.count(axis) for axis in range(3))]
                for axes in itertools.product(range(3), repeat=l)
            ]
            self.register_buffer(f"tensor_index_{l}", torch.tensor(index), persistent=False)
        self.triples = [
            (equation, degrees)
            for equation, degrees in TRIPLE_CONTRACTIONS
            if nu_max >= 3 and max(degrees) <= l_max
        ]

    @property
    def n_invariants(self) -> int:
        return 1 + (self.l_max + 1 if self.nu_max >= 2 else 0) + len(self.triples)

    def forward(self, moments: torch.Tensor) -> torch.Tensor:
        """(N, K, n_monomials) -> (N, K * n_invariants)."""
        n, k, _ = moments.shape
        tensors = [moments[:, :, 0]] + [
            moments[:, :, getattr(self, f"tensor_index_{l}")].reshape(n, k, *([3] * l))
            for l in range(1, self.l_max + 1)
        ]
        invariants = [tensors[0]]
        if self.nu_max >= 2:
            invariants += [(t * t).reshape(n, k, -1).sum(-1) for t in tensors]
        invariants += [
            torch.einsum(equation, *(tensors[d] for d in degrees))
            for equation, degrees in self.triples
        ]
        return torch.stack(invariants, dim=-1).reshape(n, -1)
