"""Symmetric starts (pyxtal), the space-group prior, and symmetry-preserving relaxation."""

import numpy as np
import pytest
import spglib
import torch
from ase.build import bulk
from ase.spacegroup.symmetrize import prep_symmetry, symmetrize_rank1, symmetrize_rank2

import respmatch
from respmatch.neighbors import neighbor_pairs
from respmatch.search.relax import Job, Stage, BatchRelaxer
from respmatch.search.starts import parse_composition, start_rng
from respmatch.search.symmetric import (
    compatible_groups,
    parse_space_groups,
    space_group_choice,
    space_group_counts,
    symmetric_start,
)
from respmatch.search.symmetrize import BatchSymmetry, symmetry_of


def spglib_number(atoms, symprec=1e-3):
    cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
    return spglib.get_symmetry_dataset(cell, symprec=symprec).number


@pytest.mark.parametrize("formula, volume, spec", [
    ("SrTiO3", 60.0, "221"),  # the perovskite: every atom on a fixed Wyckoff position
    ("SrTiO3", 60.0, "all"),
    ("Mg2SiO4", 95.0, "2-230"),
    ("C2", 11.0, "prior"),  # two atoms: pyxtal's fillings often have a higher symmetry
])
def test_symmetric_starts_have_their_group_composition_volume_and_distance(formula, volume, spec):
    numbers = parse_composition(formula)
    choice = space_group_choice(numbers, spec)
    for index in range(4):
        atoms = symmetric_start(numbers, volume, start_rng(3, index), choice, min_distance=1.2)
        assert sorted(atoms.numbers) == numbers
        assert atoms.get_volume() == pytest.approx(volume, rel=1e-9)
        assert spglib_number(atoms) == atoms.info["space_group"]
        assert len(neighbor_pairs(atoms.positions, atoms.cell.array, True, 1.2)[0]) == 0
        if spec == "221":
            assert atoms.info["space_group"] == 221


def test_symmetric_start_depends_only_on_seed_and_index():
    numbers = parse_composition("ZnS")
    choice = space_group_choice(numbers, "all")
    forward = [symmetric_start(numbers, 40.0, start_rng(0, i), choice) for i in range(3)]
    backward = [symmetric_start(numbers, 40.0, start_rng(0, i), choice) for i in reversed(range(3))][::-1]
    for a, b in zip(forward, backward):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
    assert not np.allclose(forward[0].cell.array, forward[1].cell.array)


def test_space_group_spec_parsing_and_compatibility():
    assert parse_space_groups("1,2,12-14, 225") == (1, 2, 12, 13, 14, 225)
    assert parse_space_groups("all") == tuple(range(1, 231)) and parse_space_groups("Prior") == "prior"
    for bad in ("2-", "abc", "0-5", "200-231", "12-3", ""):
        with pytest.raises(ValueError, match="--space-groups"):
            parse_space_groups(bad)
    sr_ti_o3 = parse_composition("SrTiO3")
    # Fd-3m's smallest orbit holds 8 atoms of the conventional cell, 2 of the primitive one.
    assert compatible_groups(sr_ti_o3, (221, 227)) == (221,)
    with pytest.raises(ValueError, match="no space group in 227 is compatible with O3SrTi"):
        space_group_choice(sr_ti_o3, "227")


def test_prior_counts_groups_per_primitive_size_and_weights_the_draw():
    rocksalt = bulk("NaCl", "rocksalt", a=5.64, cubic=True)  # 8 atoms, a 2-atom primitive cell
    counts = space_group_counts([rocksalt, bulk("Si", "diamond", a=5.43), bulk("Cu", "fcc", a=3.6)])
    assert counts == {1: {225: 1}, 2: {225: 1, 227: 1}}
    choice = space_group_choice(parse_composition("NaCl"), "prior", prior=counts)
    weights = dict(zip(choice.groups, choice.weights))
    assert weights[225] == 2.0 and weights[221] == 1.0 and 227 not in weights  # 227 needs 2 alike atoms
    draws = [choice.draw(np.random.default_rng(k)) for k in range(400)]
    assert draws.count(225) > 400 * 1.5 / sum(choice.weights)  # weight 2 of the total: above uniform


def test_batched_symmetrisation_is_ase_fixsymmetry_for_every_structure_of_a_batch():
    rng = np.random.default_rng(0)
    silicon = bulk("Si", "diamond", a=5.43) * (1, 1, 2)
    salt = bulk("NaCl", "rocksalt", a=5.6, cubic=True)
    salt.positions[0] += [0.1, 0.0, 0.0]  # a lower symmetry, with a different atom mapping
    batch = [silicon, salt]
    forces = [rng.normal(size=(len(a), 3)) for a in batch]
    stresses = [(lambda m: m + m.T)(rng.normal(size=(3, 3))) for _ in batch]
    symmetry = BatchSymmetry.build([symmetry_of(a) for a in batch], torch.float64, "cpu")
    cells = torch.tensor(np.array([a.cell.array for a in batch]))
    ours_f = symmetry.forces(cells, torch.tensor(np.concatenate(forces))).numpy()
    ours_s = symmetry.stress(cells, torch.tensor(np.array(stresses))).numpy()
    expected_f, expected_s = [], []
    for atoms, f, s in zip(batch, forces, stresses):
        rotations, translations, mapping = prep_symmetry(atoms, symprec=0.01)
        inverse = np.linalg.inv(atoms.cell.array)
        expected_f.append(symmetrize_rank1(atoms.cell.array, inverse, f, rotations, translations, mapping))
        expected_s.append(symmetrize_rank2(atoms.cell.array, inverse, s, rotations))
    assert np.allclose(ours_f, np.concatenate(expected_f), atol=1e-12)
    assert np.allclose(ours_s, np.array(expected_s), atol=1e-12)
    assert not np.allclose(ours_f, np.concatenate(forces))  # it did something


def operations_hold(atoms, rotations, translations, tolerance):
    """Every operation (fractional R, t) maps the atoms onto atoms of the same element."""
    scaled = atoms.get_scaled_positions()
    for rotation, translation in zip(rotations, translations):
        moved = scaled @ rotation.T + translation
        difference = moved[:, None, :] - scaled[None, :, :]
        difference -= np.round(difference)
        distance = np.linalg.norm(difference @ atoms.cell.array, axis=2)
        same = atoms.numbers[:, None] == atoms.numbers[None, :]
        if not np.where(same, distance, np.inf).min(axis=1).max() < tolerance:
            return False
    return True


def test_keep_symmetry_relaxation_keeps_the_operations_of_the_start(trained_diamond):
    model = respmatch.load_model(trained_diamond[0])
    numbers = parse_composition("C8")
    choice = space_group_choice(numbers, "2-230")
    starts = [symmetric_start(numbers, 8 * 5.5, start_rng(1, i), choice) for i in range(2)]
    for atoms in starts:  # noise below FixSymmetry's symprec (0.01 Å): the group is still found
        atoms.positions += np.random.default_rng(0).uniform(-0.002, 0.002, atoms.positions.shape)
    stages = (Stage("full", fmax=1e-3, max_steps=60, cell="full"),)
    jobs = [Job(key=i, atoms=a.copy(), stages=stages, keep_symmetry=True) for i, a in enumerate(starts)]
    jobs.append(Job(key=2, atoms=starts[0].copy(), stages=stages))  # a plain one in the same batch
    results = sorted(BatchRelaxer(model, batch_size=2, dtype=torch.float64).run(jobs), key=lambda r: r.key)
    for start, result in zip(starts, results):
        rotations, translations, _ = prep_symmetry(start, symprec=0.01)
        assert len(rotations) > 1 and operations_hold(start, rotations, translations, 0.01)
        assert operations_hold(result.atoms, rotations, translations, 0.01)
        assert result.steps > 1 and not np.allclose(result.atoms.positions, start.positions, atol=1e-3)
