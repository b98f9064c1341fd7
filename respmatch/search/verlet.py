"""Neighbour lists with a skin (Verlet lists) for the batched relaxer.

Building the lists with vesin at every step took a quarter of a carbon search step.  Pairs
within cutoff + skin are listed once per structure and cut to the cutoff at each step in torch;
a structure's list is rebuilt only when some pair outside it may have come within the cutoff.
Written here because vesin lists pairs but does not track when a list goes stale.

Bound used (row vectors, as ASE): since listing, the cell went H0 -> H = H0·M and each atom
moved r = r0·M + u.  A pair vector then is v = v0·M + (u_j - u_i), so |v| ≥ |v0|·σ_min(M) -
2·max|u|.  A pair left out had |v0| ≥ cutoff + skin; the list is exact while that bound stays
above the cutoff.
"""

from __future__ import annotations

import torch

from respmatch.neighbors import Graph, build_graph
from respmatch.structures import Structures

SKIN = 0.5  # Å; at the fixed-volume preset's max step of 0.01 Å a list lasts 12 steps or more


class VerletLists:
    """Pairs of a changing batch: structures leave (``keep``) and enter at the end."""

    def __init__(self, cutoff: float, skin: float = SKIN):
        self.cutoff, self.skin = float(cutoff), float(skin)
        self.pairs: Graph | None = None  # within cutoff + skin when listed
        self.positions: torch.Tensor | None = None  # (N listed, 3) at listing
        self.cells: torch.Tensor | None = None  # (B listed, 3, 3) at listing
        self._system: torch.Tensor | None = None  # (N listed,) structure of each listed atom
        self.builds = 0  # structures listed so far

    @torch.no_grad()
    def graph(self, structures: Structures) -> Graph:
        """The exact graph within the cutoff of ``structures`` (the listed ones plus any new)."""
        shortest = self._shortest_unlisted(structures)
        if bool((shortest <= self.cutoff).any()):
            # Lists more than half spent are renewed at the same time: fewer, larger rebuilds
            # (each one re-sorts all pairs).
            self._rebuild(structures, shortest <= self.cutoff + self.skin / 2)
        distance = self.pairs.vectors(structures).norm(dim=1)
        return self.pairs.select(distance < self.cutoff)

    def keep(self, keep: torch.Tensor) -> None:
        """Forget the structures not in ``keep`` (B,) bool, as the batch drops them."""
        n_atoms = torch.bincount(self._system, minlength=len(self.cells))
        atom_keep = torch.repeat_interleave(keep, n_atoms)
        self.pairs = self.pairs.select(atom_keep[self.pairs.receiver], atom_keep)
        self.positions, self.cells = self.positions[atom_keep], self.cells[keep]
        self._system = torch.repeat_interleave(
            torch.arange(int(keep.sum()), device=keep.device), n_atoms[keep]
        )

    def _shortest_unlisted(self, structures: Structures) -> torch.Tensor:
        """(B,) lower bound on the length of any pair not listed (-inf for new structures)."""
        shortest = structures.cell.new_full((structures.n_structures,), -torch.inf)
        if self.cells is None or len(self.cells) == 0:
            return shortest
        listed, n_listed = len(self.cells), len(self.positions)
        eye = torch.eye(3, dtype=self.cells.dtype, device=self.cells.device)
        periodic = structures.periodic[:listed, None, None]
        # Molecules have no cell: M = I there.
        deformation = torch.where(
            periodic, torch.linalg.solve(torch.where(periodic, self.cells, eye), structures.cell[:listed]), eye
        )
        affine = torch.einsum("na,nab->nb", self.positions, deformation[self._system])
        drift = (structures.positions[:n_listed] - affine).norm(dim=1)
        largest = drift.new_zeros(listed).scatter_reduce(0, self._system, drift, "amax")
        shortest[:listed] = (self.cutoff + self.skin) * torch.linalg.svdvals(deformation)[:, -1] - 2 * largest
        return shortest

    def _rebuild(self, structures: Structures, stale: torch.Tensor) -> None:
        """List the stale structures anew, keep the others' pairs."""
        system = structures.system
        atom_stale = stale[system]
        stale_atoms = torch.nonzero(atom_stale).flatten()
        fresh = build_graph(structures.select(torch.nonzero(stale).flatten()), self.cutoff + self.skin)
        receiver, sender, shift = [stale_atoms[fresh.receiver]], [stale_atoms[fresh.sender]], [fresh.shift]
        if self.pairs is not None:
            kept = ~atom_stale[self.pairs.receiver]
            receiver.append(self.pairs.receiver[kept])
            sender.append(self.pairs.sender[kept])
            shift.append(self.pairs.shift[kept])
        self.pairs = Graph.from_edges(torch.cat(receiver), torch.cat(sender), torch.cat(shift))
        positions, cells = structures.positions.clone(), structures.cell.clone()
        if self.positions is not None:  # the structures kept keep their listing point
            n_atoms, n_structures = len(self.positions), len(self.cells)
            positions[:n_atoms] = torch.where(atom_stale[:n_atoms, None], positions[:n_atoms], self.positions)
            cells[:n_structures] = torch.where(stale[:n_structures, None, None], cells[:n_structures], self.cells)
        self.positions, self.cells, self._system = positions, cells, system
        self.builds += int(stale.sum())
