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


def smallest_singular_value(matrices: torch.Tensor) -> torch.Tensor:
    """σ_min of each (B, 3, 3) matrix, in closed form (the eigenvalues of MᵀM by the
    trigonometric solution of its characteristic cubic).

    Elementwise arithmetic on the batch: no LAPACK call per matrix (``svdvals`` was most of the
    skin check on the CPU) and nothing that waits for the host on a GPU.
    """
    gram = matrices.transpose(1, 2) @ matrices
    eye = torch.eye(3, dtype=gram.dtype, device=gram.device)
    mean = gram.diagonal(dim1=1, dim2=2).sum(-1) / 3
    shifted = gram - mean[:, None, None] * eye
    spread = ((shifted**2).sum((1, 2)) / 6).sqrt()
    ratio = torch.linalg.det(shifted / spread.clamp(min=1e-30)[:, None, None]) / 2
    angle = torch.acos(ratio.clamp(-1.0, 1.0)) / 3
    smallest = mean + 2 * spread * torch.cos(angle + 2 * torch.pi / 3)
    return smallest.clamp(min=0).sqrt()


class VerletLists:
    """Pairs of a changing batch: structures leave (``keep``) and enter at the end.

    ``refresh`` (on the host, where the batch changes) lists anew the structures that need it;
    ``listed`` (every step) gives the pairs and which lists may have gone stale since; ``graph``
    is both, for a caller that refreshes at every step.  With
    ``cut`` the pairs are cut to the cutoff at each step, the exact graph; without, the pairs
    within cutoff + skin are passed as listed (no step-dependent sizes, so nothing waits for the
    host on a GPU), for a potential that is exactly zero beyond its cutoff.
    """

    def __init__(self, cutoff: float, skin: float = SKIN, cut: bool = True):
        self.cutoff, self.skin, self.cut = float(cutoff), float(skin), bool(cut)
        self.pairs: Graph | None = None  # within cutoff + skin when listed
        self.positions: torch.Tensor | None = None  # (N listed, 3) at listing
        self.cells: torch.Tensor | None = None  # (B listed, 3, 3) at listing
        self.inverse_cells: torch.Tensor | None = None  # (B listed, 3, 3); the identity for molecules
        self._system: torch.Tensor | None = None  # (N listed,) structure of each listed atom
        self.builds = 0  # structures listed so far

    @torch.no_grad()
    def refresh(self, structures: Structures, margin: float = 0.0) -> None:
        """List the new structures, and anew those whose lists may miss a pair within
        cutoff + ``margin`` (a margin lets them last the steps until the next refresh)."""
        shortest = self._shortest_unlisted(structures)
        if bool((shortest <= self.cutoff + margin).any()):
            # Lists more than half spent are renewed at the same time: fewer, larger rebuilds
            # (each one re-sorts all pairs).
            self._rebuild(structures, shortest <= self.cutoff + max(margin, self.skin / 2))

    def graph(self, structures: Structures) -> Graph:
        """The exact graph within the cutoff of ``structures`` (the listed ones plus any new)."""
        self.refresh(structures)
        return self.listed(structures, check=False)[0]

    @torch.no_grad()
    def listed(self, structures: Structures, check: bool = True) -> tuple[Graph, torch.Tensor | None]:
        """The pairs of ``structures`` as listed at the last refresh, and which structures'
        lists may have gone stale since, (B,) bool (None unless ``check``)."""
        stale = self._shortest_unlisted(structures) <= self.cutoff if check else None
        if not self.cut:
            return self.pairs, stale
        distance = self.pairs.vectors(structures).norm(dim=1)
        return self.pairs.select(distance < self.cutoff), stale

    def keep(self, keep: torch.Tensor) -> None:
        """Forget the structures not in ``keep`` (B,) bool, as the batch drops them."""
        n_atoms = torch.bincount(self._system, minlength=len(self.cells))
        atom_keep = torch.repeat_interleave(keep, n_atoms, output_size=len(self._system))
        self.pairs = self.pairs.select(atom_keep[self.pairs.receiver], atom_keep)
        self.positions, self.cells = self.positions[atom_keep], self.cells[keep]
        self.inverse_cells = self.inverse_cells[keep]
        self._system = torch.repeat_interleave(
            torch.arange(int(keep.sum()), device=keep.device), n_atoms[keep]
        )

    def _shortest_unlisted(self, structures: Structures) -> torch.Tensor:
        """(B,) lower bound on the length of any pair not listed (-inf for new structures)."""
        shortest = structures.cell.new_full((structures.n_structures,), -torch.inf)
        if self.cells is None or len(self.cells) == 0:
            return shortest
        listed, n_listed = len(self.cells), len(self.positions)
        # M = H0⁻¹·H; molecules have no cell: M = I there (their inverse "cell" is I, their cell 0).
        eye = torch.eye(3, dtype=self.cells.dtype, device=self.cells.device)
        cells = torch.where(structures.periodic[:listed, None, None], structures.cell[:listed], eye)
        deformation = self.inverse_cells @ cells
        affine = torch.einsum("na,nab->nb", self.positions, deformation.index_select(0, self._system))
        drift = (structures.positions[:n_listed] - affine).norm(dim=1)
        largest = drift.new_zeros(listed).scatter_reduce(0, self._system, drift, "amax")
        bound = (self.cutoff + self.skin) * smallest_singular_value(deformation) - 2 * largest
        return torch.cat([bound, shortest[listed:]])

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
        eye = torch.eye(3, dtype=cells.dtype, device=cells.device)
        self.inverse_cells = torch.linalg.inv(torch.where(structures.periodic[:, None, None], cells, eye))
        self.positions, self.cells, self._system = positions, cells, system
        self.builds += int(stale.sum())
