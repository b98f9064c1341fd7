"""The one interface the batched relaxer needs from an energy model (docs/design.md §3, "the
potential seam").

A potential takes a batch of structures (``Structures``: flat tensors of many molecules or
crystals) and returns energy (B,) in eV, forces (N, 3) in eV/Å and, when asked, stress (B, 3, 3)
in eV/Å³ with ASE's sign.  Its ``cutoff`` tells the relaxer how far to list neighbours: the
relaxer keeps Verlet lists within it and passes the exact graph in.  A potential that builds its
own graphs says ``cutoff = None`` and is called with ``graph=None``.

The Response Matching model (``Denoiser``) is one implementation; SevenNet-0 through
``respmatch.recheck.potentials`` is another.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from respmatch.neighbors import Graph
from respmatch.structures import Structures


@runtime_checkable
class Potential(Protocol):
    cutoff: float | None  # Å: neighbour lists the relaxer builds for it (None: it builds its own)

    def __call__(
        self, structures: Structures, graph: Graph | None = None, *, forces: bool = True, stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """``energy`` (B,), and ``forces`` (N, 3) / ``stress`` (B, 3, 3) when asked, ASE units."""
        ...
