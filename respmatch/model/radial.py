"""Radial basis: trainable Bessel functions times a smooth polynomial cutoff envelope."""

from __future__ import annotations

import math

import torch
from torch import nn


def polynomial_envelope(r: torch.Tensor, cutoff: float, p: int) -> torch.Tensor:
    """1 at r = 0, falls to 0 at the cutoff with vanishing first and second derivatives."""
    x = (r / cutoff).clamp(max=1.0)
    return (
        1
        - (p + 1) * (p + 2) / 2 * x**p
        + p * (p + 2) * x ** (p + 1)
        - p * (p + 1) / 2 * x ** (p + 2)
    )


class BesselRadialBasis(nn.Module):
    """sqrt(2/r_c)·sin(w_n r)/r with w_n trainable (initially nπ/r_c), times the envelope."""

    def __init__(self, cutoff: float, n_basis: int = 6, envelope_p: int = 2):
        super().__init__()
        self.cutoff = float(cutoff)
        self.envelope_p = int(envelope_p)
        self.frequencies = nn.Parameter(torch.arange(1, n_basis + 1) * math.pi / cutoff)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        """Distances (...) -> basis (n_basis, ...), the basis first as the angular one."""
        frequencies = self.frequencies.view(-1, *([1] * r.dim()))
        bessel = math.sqrt(2 / self.cutoff) * torch.sin(frequencies * r) / r
        return bessel * polynomial_envelope(r, self.cutoff, self.envelope_p)
