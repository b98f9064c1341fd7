"""Cartesian angular basis: monomials x^a y^b z^c of the unit edge vector, a+b+c ≤ l_max."""

from __future__ import annotations

import torch
from torch import nn


def monomial_exponents(l_max: int) -> list[tuple[int, int, int]]:
    """Exponents (a, b, c) in the order ``CartesianAngularBasis`` produces them.

    Degree l is built from degree l-1: multiply by x every monomial, by y those without x, by
    z those with only z.  Each monomial is then one product of rows, never a gather.
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
        """(3, ...) unit vectors -> (n_monomials, ...), ordered as ``monomial_exponents``.

        Components first, one row per monomial, stacked once at the end: the profile showed
        the copies of concatenating each degree (or of components-last layouts) costing more
        than the products.
        """
        x, y, z = unit
        one = torch.ones_like(x)
        rows, degree, free_of_x, z_only = [one], [one], [one], one
        for _ in range(self.l_max):
            with_y = [y * row for row in free_of_x]
            z_only = z * z_only
            degree = [x * row for row in degree] + with_y + [z_only]
            free_of_x = with_y + [z_only]
            rows += degree
        return torch.stack(rows)
