"""Cartesian angular basis: monomials x^a y^b z^c of the unit edge vector, a+b+c ≤ l_max."""

from __future__ import annotations

import torch
from torch import nn


def monomial_exponents(l_max: int) -> list[tuple[int, int, int]]:
    """Exponents (a, b, c) in the order ``CartesianAngularBasis`` produces them.

    Degree l is built from degree l-1: multiply by x every monomial, by y those without x, by
    z those with only z.  Each step is then a slice, not a gather (gathers dominated the profile).
    """
    degree = [(0, 0, 0)]
    exponents = list(degree)
    for _ in range(l_max):
        degree = [
            tuple(e + (i == axis) for i, e in enumerate(monomial))
            for axis in range(3)
            for monomial in degree
            if not any(monomial[:axis])
        ]
        exponents += degree
    return exponents


class CartesianAngularBasis(nn.Module):
    def __init__(self, l_max: int):
        super().__init__()
        self.l_max = int(l_max)

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        """(E, 3) unit vectors -> (E, n_monomials), ordered as ``monomial_exponents``."""
        degree = torch.ones_like(unit[:, :1])
        parts = [degree]
        for _ in range(self.l_max):
            n_x, n_z = degree.shape[1], 1  # monomials free of x: the tail, free of x and y: the last
            n_yz = _count_free_of_x(degree.shape[1])
            degree = torch.cat(
                [
                    unit[:, 0:1] * degree,
                    unit[:, 1:2] * degree[:, n_x - n_yz :],
                    unit[:, 2:3] * degree[:, n_x - n_z :],
                ],
                dim=1,
            )
            parts.append(degree)
        return torch.cat(parts, dim=1)


def _count_free_of_x(n_monomials: int) -> int:
    """Monomials of one degree l without x number l+1 (of (l+1)(l+2)/2 in all)."""
    l = 0
    while (l + 1) * (l + 2) // 2 < n_monomials:
        l += 1
    return l + 1
