"""Neighbour lists of a batch of structures, from vesin (one call per structure; its torch
interface on a GPU, so that the lists never leave the device).

Pairs are found on detached coordinates; edge vectors are rebuilt in torch from positions,
integer image shifts and the cell, so that autograd sees them.  vesin handles cutoffs larger
than the cell (many periodic images) and molecules (no box).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import vesin

from respmatch.structures import Structures


@dataclass
class Graph:
    """Directed edges ``sender -> receiver`` within the cutoff, sorted by receiver.

    ``slot`` is each edge's position among its receiver's edges, so that edge features can be
    laid out densely over (atoms, max_neighbors) slots for a batched matrix product.
    """

    receiver: torch.Tensor  # (E,) atom whose environment the edge belongs to
    sender: torch.Tensor  # (E,) the neighbour
    shift: torch.Tensor  # (E, 3) integer lattice shift of the sender's image
    slot: torch.Tensor  # (E,)
    max_neighbors: int

    @classmethod
    def from_edges(cls, receiver, sender, shift) -> Graph:
        """The graph of these edges, given in any order."""
        order = torch.argsort(receiver, stable=True)
        return cls._sorted(receiver[order], sender[order], shift[order])

    @classmethod
    def _sorted(cls, receiver, sender, shift) -> Graph:
        counts = torch.bincount(receiver)
        first_edge = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(receiver), device=receiver.device) - first_edge[receiver]
        return cls(receiver, sender, shift, slot, int(counts.max()) if len(counts) else 0)

    def dense_index(self, width: int) -> torch.Tensor:
        """Each edge's place in an (atoms × ``width``) layout, flattened, (E,)."""
        return self.receiver * width + self.slot

    def select(self, keep: torch.Tensor, atom_keep: torch.Tensor | None = None) -> Graph:
        """The edges in ``keep`` (E,) bool; atoms renumbered to those in ``atom_keep`` (N,) bool."""
        index = torch.nonzero(keep).flatten()
        receiver, sender = self.receiver.index_select(0, index), self.sender.index_select(0, index)
        if atom_keep is not None:
            renumber = torch.cumsum(atom_keep, 0) - 1
            receiver, sender = renumber[receiver], renumber[sender]
        return Graph._sorted(receiver, sender, self.shift.index_select(0, index))

    def vectors(self, structures: Structures) -> torch.Tensor:
        """Edge vectors x_sender + shift·cell - x_receiver, (E, 3)."""
        positions = structures.positions
        system = structures.system.index_select(0, self.receiver)
        cell = structures.cell.index_select(0, system)
        image = torch.einsum("ea,eab->eb", self.shift.to(positions.dtype), cell)
        # index_select, not fancy indexing: its backward is an index_add, much faster on CPU.
        return positions.index_select(0, self.sender) - positions.index_select(0, self.receiver) + image


def neighbor_pairs(
    positions: np.ndarray,
    cell: np.ndarray,
    periodic: bool,
    cutoff: float,
    full: bool = True,
    quantities: str = "ijS",
) -> list[np.ndarray]:
    """vesin's ``quantities`` (default: i, j, lattice shift of j) for pairs closer than ``cutoff``."""
    box = cell if periodic else np.zeros((3, 3))
    calculator = vesin.NeighborList(cutoff=float(cutoff), full_list=full)
    return calculator.compute(
        points=np.ascontiguousarray(positions, dtype=np.float64),
        box=np.ascontiguousarray(box, dtype=np.float64),
        periodic=bool(periodic),
        quantities=quantities,
    )


def build_graph(structures: Structures, cutoff: float) -> Graph:
    """The graph within ``cutoff`` of every structure: vesin's torch interface where the
    structures are off the CPU and it is installed (the lists stay on the device), else vesin's
    numpy one."""
    if structures.positions.device.type != "cpu" and _vesin_torch() is not None:
        return build_graph_on_device(structures, cutoff)
    positions = structures.positions.detach().cpu().numpy().astype(np.float64)
    cells = structures.cell.detach().cpu().numpy().astype(np.float64)
    periodic = structures.periodic.cpu().numpy()
    receivers, senders, shifts = [], [], []
    for b, (start, n) in enumerate(zip(structures.first_atom.tolist(), structures.n_atoms.tolist())):
        i, j, shift = neighbor_pairs(positions[start : start + n], cells[b], periodic[b], cutoff)
        receivers.append(i + start)
        senders.append(j + start)
        shifts.append(shift)
    device = structures.positions.device

    def tensor(arrays, shape=(-1,)):
        return torch.as_tensor(np.concatenate(arrays).astype(np.int64).reshape(shape), device=device)

    return Graph.from_edges(tensor(receivers), tensor(senders), tensor(shifts, (-1, 3)))


def build_graph_on_device(structures: Structures, cutoff: float) -> Graph:
    """``build_graph`` with vesin's torch interface (``vesin-torch``), on the structures' device
    (the CPU included, which is how it is tested without a GPU)."""
    vesin_torch = _vesin_torch()
    if vesin_torch is None:
        raise ImportError("neighbour lists on the device need vesin's torch interface: pip install vesin-torch")
    calculator = vesin_torch.NeighborList(cutoff=float(cutoff), full_list=True)
    positions = structures.positions.detach().to(torch.float64)
    cells = structures.cell.detach().to(torch.float64)
    receivers, senders, shifts = [], [], []
    starts, sizes = structures.first_atom.tolist(), structures.n_atoms.tolist()
    for b, (start, n, periodic) in enumerate(zip(starts, sizes, structures.periodic.tolist())):
        box = cells[b] if periodic else torch.zeros_like(cells[b])
        i, j, shift = calculator.compute(
            points=positions[start : start + n].contiguous(), box=box.contiguous(), periodic=periodic, quantities="ijS"
        )
        receivers.append(i.long() + start)
        senders.append(j.long() + start)
        shifts.append(shift.long())
    return Graph.from_edges(torch.cat(receivers), torch.cat(senders), torch.cat(shifts))


def _vesin_torch():
    """vesin's torch interface, or None where the optional ``vesin-torch`` is not installed."""
    try:
        import vesin.torch  # optional: only a GPU run needs it
    except ImportError:
        return None
    return vesin.torch
