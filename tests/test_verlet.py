"""Neighbour lists with a skin: at every step the same pairs as a fresh vesin list (or a flag that
they may not be, between refreshes)."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from respmatch.neighbors import build_graph, build_graph_on_device
from respmatch.search.verlet import VerletLists, smallest_singular_value
from respmatch.structures import Structures

CUTOFF = 3.0


def edges(graph):
    triples = zip(graph.receiver.tolist(), graph.sender.tolist(), map(tuple, graph.shift.tolist()))
    return sorted(triples)


def random_cell(rng, n=6):
    cell = 3.2 * np.eye(3) + rng.uniform(-0.4, 0.4, (3, 3))
    return Atoms("C" * n, scaled_positions=rng.random((n, 3)), cell=cell, pbc=True)


def drift(structures, rng, step):
    """Every atom moves by up to ``step`` Å; each cell strains by up to 1%, atoms along."""
    strain = torch.eye(3, dtype=torch.float64) + torch.as_tensor(rng.uniform(-0.01, 0.01, (len(structures.cell), 3, 3)))
    strain = torch.where(structures.periodic[:, None, None], strain, torch.eye(3, dtype=torch.float64))
    positions = torch.einsum("na,nab->nb", structures.positions, strain[structures.system])
    positions = positions + torch.as_tensor(rng.uniform(-step, step, positions.shape))
    return Structures(positions, structures.numbers, structures.cell @ strain, structures.periodic, structures.n_atoms)


def test_lists_give_the_exact_graph_while_atoms_and_cells_move():
    rng = np.random.default_rng(0)
    atoms = [random_cell(rng) for _ in range(3)] + [molecule("C6H6")]
    structures = Structures.from_atoms(atoms, dtype=torch.float64)
    lists = VerletLists(CUTOFF, skin=0.4)
    for _ in range(60):
        assert edges(lists.graph(structures)) == edges(build_graph(structures, CUTOFF))
        structures = drift(structures, rng, 0.03)
    # Rebuilt now and then, not at every step (4 structures listed first, 60 steps).
    assert 4 < lists.builds < 4 * 30


def test_lists_follow_structures_leaving_and_entering():
    rng = np.random.default_rng(1)
    structures = Structures.from_atoms([random_cell(rng, n) for n in (4, 7, 5)], dtype=torch.float64)
    lists = VerletLists(CUTOFF, skin=0.4)
    lists.graph(structures)
    structures = drift(structures, rng, 0.02)
    keep = torch.tensor([True, False, True])
    lists.keep(keep)
    remaining = structures.select(torch.nonzero(keep).flatten())
    entering = Structures.from_atoms([random_cell(rng, 3)], dtype=torch.float64)
    batch = Structures(
        torch.cat([remaining.positions, entering.positions]),
        torch.cat([remaining.numbers, entering.numbers]),
        torch.cat([remaining.cell, entering.cell]),
        torch.cat([remaining.periodic, entering.periodic]),
        torch.cat([remaining.n_atoms, entering.n_atoms]),
    )
    builds = lists.builds
    assert edges(lists.graph(batch)) == edges(build_graph(batch, CUTOFF))
    assert lists.builds == builds + 1  # only the new structure was listed


def test_smallest_singular_value_in_closed_form():
    rng = np.random.default_rng(2)
    matrices = torch.as_tensor(
        np.concatenate([np.eye(3)[None], np.diag([1.0, 1.0, 0.97])[None], np.eye(3) + 0.05 * rng.standard_normal((20, 3, 3))]),
    )
    assert torch.allclose(smallest_singular_value(matrices), torch.linalg.svdvals(matrices)[:, -1], atol=1e-9)


def test_listed_pairs_flag_the_lists_that_may_have_gone_stale():
    """Between refreshes (a GPU batch steps without the host) the lists say which structures'
    pairs may be incomplete; uncut, they hold every pair within the cutoff while not stale."""
    rng = np.random.default_rng(3)
    structures = Structures.from_atoms([random_cell(rng) for _ in range(3)], dtype=torch.float64)
    lists = VerletLists(CUTOFF, skin=0.3, cut=False)
    lists.refresh(structures)
    flagged = 0
    for _ in range(40):
        structures = drift(structures, rng, 0.02)
        pairs, stale = lists.listed(structures)
        exact = build_graph(structures, CUTOFF)
        vectors = pairs.vectors(structures).norm(dim=1)
        within = pairs.select(vectors < CUTOFF)
        for b in range(3):
            if not stale[b]:  # a list not flagged holds all of its structure's pairs
                assert edges_of(within, structures, b) == edges_of(exact, structures, b)
        flagged += int(stale.sum())
    assert flagged > 0  # the drift spends the thin skin


def edges_of(graph, structures, b):
    """The edges of structure ``b``."""
    system = structures.system.tolist()
    return [edge for edge in edges(graph) if system[edge[0]] == b]


def test_the_device_neighbour_list_is_vesins():
    """vesin's torch interface (a GPU's lists), run on the CPU, gives the numpy interface's pairs."""
    pytest.importorskip("vesin_torch")  # the package behind vesin.torch
    rng = np.random.default_rng(4)
    structures = Structures.from_atoms([random_cell(rng, 5), molecule("C6H6"), random_cell(rng, 7)], dtype=torch.float32)
    assert edges(build_graph_on_device(structures, CUTOFF)) == edges(build_graph(structures, CUTOFF))
