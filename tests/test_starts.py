"""Random starting structures (docs/design.md §1.3) checked against ASE's own geometry routines.

Periodic distances come from ``ase.geometry.get_distances`` (minimum image via Minkowski
reduction) and self-image distances from the Minkowski-reduced cell, independently of the
lattice-translation search inside respmatch.
"""

import re
from collections import Counter

import numpy as np
import pytest
from ase.geometry import get_distances, minkowski_reduce

from respmatch.search.starts import (
    composition_volume,
    crystal_start,
    molecule_start,
    parse_composition,
    parse_volume_range,
    start_rng,
    volume_per_atom_for,
)

C5NOH8 = parse_composition("C5NOH8")


def assert_same(a, b):
    assert list(a.numbers) == list(b.numbers)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.cell.array, b.cell.array)
    assert list(a.pbc) == list(b.pbc)


def shortest_periodic_distance(atoms):
    """Smallest distance between any two atoms or an atom and its own image."""
    _, distances = get_distances(atoms.positions, cell=atoms.cell, pbc=True)
    pairs = distances[~np.eye(len(atoms), dtype=bool)]
    reduced, _ = minkowski_reduce(atoms.cell.array)
    self_image = np.linalg.norm(reduced, axis=1).min()
    return min(pairs.min(initial=np.inf), self_image)


# --- compositions -----------------------------------------------------------------------------


def test_parse_composition():
    assert parse_composition("C8") == [6] * 8
    assert Counter(C5NOH8) == {6: 5, 7: 1, 8: 1, 1: 8}
    assert C5NOH8 == sorted(C5NOH8)
    assert parse_composition("H2O") == [1, 1, 8]
    assert parse_composition("CH2CH2") == [1, 1, 1, 1, 6, 6]


@pytest.mark.parametrize("formula", ["Xq2", "", "c8", "C8(", "2"])
def test_unknown_formula(formula):
    with pytest.raises(ValueError, match=re.escape(f"unknown formula '{formula}'")):
        parse_composition(formula)


def test_unknown_formula_names_the_symbol():
    with pytest.raises(ValueError, match="no element 'Xq'"):
        parse_composition("C2Xq2")


@pytest.mark.parametrize("formula, symbol", [("Am2", "Am"), ("X2", "X")])
def test_element_outside_range(formula, symbol):
    with pytest.raises(ValueError, match=f"element {symbol} is outside Z 1..94"):
        parse_composition(formula)


def test_element_unknown_to_model():
    assert parse_composition("C8", known_elements=[6]) == [6] * 8
    with pytest.raises(ValueError) as error:
        parse_composition("SiC", known_elements=[6])
    assert str(error.value) == "the model was not trained on element(s) Si; it knows C"
    with pytest.raises(ValueError, match=r"element\(s\) N, O; it knows H, C"):
        parse_composition("C5NOH8", known_elements={6, 1})


def test_composition_volume():
    volumes = {1: 2.0, 6: 5.5, 7: 4.0, 8: 3.5}
    assert composition_volume(C5NOH8, volumes) == pytest.approx(8 * 2.0 + 5 * 5.5 + 4.0 + 3.5)
    with pytest.raises(ValueError, match="no volume for element Si.*--volume-per-atom"):
        composition_volume([6, 14], volumes)
    with pytest.raises(ValueError, match="fitted volume of O is zero.*--volume-per-atom"):
        composition_volume([8], {8: 0.0})
    # one element fitted to zero volume (its share went to a partner) is fine in a composition
    assert composition_volume([5, 8, 8], {5: 0.0, 8: 6.0}) == pytest.approx(12.0)


# --- volumes per atom -------------------------------------------------------------------------


def test_volume_per_atom_range():
    values = [volume_per_atom_for(i, 7, (3.8, 5.6)) for i in range(7)]
    assert values[0] == 3.8 and values[-1] == 5.6
    np.testing.assert_allclose(np.diff(values), 0.3, rtol=1e-12)
    assert volume_per_atom_for(0, 1, (3.8, 5.6)) == 3.8
    assert volume_per_atom_for(3, 7, 4.2) == 4.2
    with pytest.raises(ValueError, match="outside 0..6"):
        volume_per_atom_for(7, 7, (3.8, 5.6))


def test_parse_volume_range():
    assert parse_volume_range("5") == 5.0
    assert parse_volume_range("5.0") == 5.0
    assert parse_volume_range("3.8:5.6") == (3.8, 5.6)
    assert parse_volume_range("4:4") == (4.0, 4.0)


@pytest.mark.parametrize("text", ["0", "-1", "5:3", "a:b", "", "1:2:3", "nan", "inf", "0:4"])
def test_parse_volume_range_rejects(text):
    with pytest.raises(ValueError, match="volume per atom must be a positive number"):
        parse_volume_range(text)


# --- molecules --------------------------------------------------------------------------------


def test_molecule_starts():
    box = (10.0, 5.0, 5.0)
    for index in range(20):
        atoms = molecule_start(C5NOH8, start_rng(1, index), box=box, min_distance=0.7)
        assert list(atoms.numbers) == C5NOH8
        assert not atoms.pbc.any()
        assert np.all(atoms.cell.array == 0)
        assert np.all(atoms.positions >= 0) and np.all(atoms.positions <= box)
        distances = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
        assert distances.min() >= 0.7


def test_molecule_box_too_small():
    message = "box 1×1×1 Å too small for 20 atoms at minimum distance 0.7 Å"
    with pytest.raises(ValueError, match=message):
        molecule_start([6] * 20, start_rng(0, 0), box=(1.0, 1.0, 1.0), max_attempts=50)


# --- crystals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "numbers, volume_per_atom, distortion",
    [
        ([6] * 2, 3.8, 0.5),
        ([6] * 8, 5.6, 0.5),
        ([6] * 12, 3.8, 0.5),
        (C5NOH8, 10.0, 0.5),
        # Tiny and strongly skewed cells, where the nearest image is not the wrapped one.
        ([6] * 4, 2.0, 0.5),
        ([6] * 4, 3.8, 1.5),
    ],
)
def test_crystal_starts(numbers, volume_per_atom, distortion):
    volume = volume_per_atom * len(numbers)
    for index in range(40):
        rng = start_rng(2, index)
        atoms = crystal_start(numbers, volume, rng, min_distance=1.0, distortion=distortion)
        assert list(atoms.numbers) == numbers
        assert atoms.pbc.all()
        assert abs(np.linalg.det(atoms.cell.array)) == pytest.approx(volume, rel=1e-10)
        fractional = atoms.cell.scaled_positions(atoms.positions)
        assert np.all(fractional > -1e-12) and np.all(fractional < 1 + 1e-12)
        assert shortest_periodic_distance(atoms) >= 1.0 - 1e-12


def test_crystal_cells_are_distorted():
    cells = [crystal_start([6] * 8, 40.0, start_rng(3, i)).cell.array for i in range(10)]
    edge = 40.0 ** (1 / 3)
    assert all(np.abs(cell - edge * np.eye(3)).max() > 1e-3 for cell in cells)
    assert all(np.abs(cell - edge * np.eye(3)).max() < 0.5 * edge for cell in cells)


def test_crystal_volume_too_small():
    message = "cell of 8 Å³ too small for 8 atoms at minimum distance 1 Å"
    with pytest.raises(ValueError, match=message):
        crystal_start([6] * 8, 8.0, start_rng(0, 0), max_attempts=50)
    with pytest.raises(ValueError, match="cell of 0.5 Å³ too small for 1 atoms"):
        crystal_start([6], 0.5, start_rng(0, 0), max_attempts=50)


# --- reproducibility --------------------------------------------------------------------------


def make(kind, index, seed=7):
    rng = start_rng(seed, index)
    if kind == "molecule":
        return molecule_start(C5NOH8, rng)
    return crystal_start([6] * 8, 40.0, rng)


@pytest.mark.parametrize("kind", ["molecule", "crystal"])
def test_same_seed_and_index_same_structure(kind):
    assert_same(make(kind, 3), make(kind, 3))
    assert not np.array_equal(make(kind, 3).positions, make(kind, 4).positions)
    assert not np.array_equal(make(kind, 3, seed=8).positions, make(kind, 3).positions)


@pytest.mark.parametrize("kind", ["molecule", "crystal"])
def test_structures_independent_of_batching(kind):
    in_order = {i: make(kind, i) for i in range(10)}
    reversed_order = {i: make(kind, i) for i in reversed(range(10))}
    batches = {i: make(kind, i) for batch in ([6, 7, 8, 9], [0, 1, 2, 3, 4, 5]) for i in batch}
    for i in range(10):
        assert_same(in_order[i], reversed_order[i])
        assert_same(in_order[i], batches[i])
