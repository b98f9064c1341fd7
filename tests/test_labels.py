"""Response labels (docs/design.md §1.1) checked against an independent numpy computation.

Every reference quantity here (stiffness, Green–Lagrange strain, elastic energy, repulsion,
minimum images) is written out in numpy from the design notes; respmatch is only asked for the
labelled copies themselves.
"""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import read

from respmatch.labels import LabelConfig, draw_labels, export_labels, label_preset
from respmatch.structures import Structures

PAPER_LEVELS = (0, 1, 2, 3, 4, 6, 8, 10, 12, 16, 32)
PAPER_SCALES = np.linspace(-0.1, 0.1, 11)


# --- independent numpy reference --------------------------------------------------------------


def voigt_stiffness(youngs=1.0, poisson=0.3):
    """6×6 isotropic stiffness in Voigt notation (xx, yy, zz, yz, xz, xy), engineering shear."""
    c = youngs / ((1 + poisson) * (1 - 2 * poisson))
    stiffness = np.zeros((6, 6))
    stiffness[:3, :3] = c * poisson
    for i in range(3):
        stiffness[i, i] = c * (1 - poisson)
        stiffness[3 + i, 3 + i] = c * (1 - 2 * poisson) / 2  # shear modulus G
    return stiffness


def hand_elastic(h0, h, youngs=1.0, poisson=0.3):
    """(σ (3, 3), U) for a cell h0 deformed to h: F = H0⁻¹H, ε = ½(FᵀF - I), σ = C·ε_voigt."""
    deformation = np.linalg.inv(h0) @ h
    strain = 0.5 * (deformation.T @ deformation - np.eye(3))
    engineering = np.array([
        strain[0, 0], strain[1, 1], strain[2, 2],
        2 * strain[1, 2], 2 * strain[0, 2], 2 * strain[0, 1],
    ])
    s = voigt_stiffness(youngs, poisson) @ engineering
    sigma = np.array([[s[0], s[5], s[4]], [s[5], s[1], s[3]], [s[4], s[3], s[2]]])
    energy = 0.5 * np.sum(sigma * strain) * abs(np.linalg.det(h0))
    return sigma, energy


def pair_energy(r, r_rep):
    return (1 - r**2 / r_rep**2) ** 2 if r < r_rep else 0.0


def hand_repulsion(positions, cell, periodic, r_rep, images=3):
    """Σ over pairs (each once, periodic images included) of (1 - r²/r_rep²)², and -∇ of it."""
    n = len(positions)
    energy, forces = 0.0, np.zeros((n, 3))
    if periodic:
        shifts = list(itertools.product(range(-images, images + 1), repeat=3))
    else:
        shifts, cell = [(0, 0, 0)], np.zeros((3, 3))
    for i in range(n):
        for j in range(i, n):
            for shift in shifts:
                if i == j and shift <= (0, 0, 0):  # an atom and its own image: count +S only
                    continue
                vector = positions[j] + np.asarray(shift) @ cell - positions[i]
                r2 = vector @ vector
                if r2 >= r_rep**2:
                    continue
                closeness = 1 - r2 / r_rep**2
                energy += closeness**2
                push = 4 * closeness * vector / r_rep**2  # -dE/dr_j
                forces[j] += push
                forces[i] -= push
    return energy, forces


def lattice_shifts(cell, images=3):
    return np.array(list(itertools.product(range(-images, images + 1), repeat=3))) @ cell


def minimum_image(vector, cell):
    """Brute-force shortest lattice translate of each row of ``vector``."""
    candidates = vector[:, None, :] + lattice_shifts(cell)[None]
    best = np.linalg.norm(candidates, axis=2).argmin(1)
    return candidates[np.arange(len(vector)), best]


def in_box_translate_exists(vector, cell, half_width, tol=1e-10):
    """Does some lattice translate of each row lie inside [-half_width, half_width]³?"""
    candidates = vector[:, None, :] + lattice_shifts(cell)[None]
    return (np.abs(candidates) <= half_width + tol).all(2).any(1)


def labels_of(atoms_list, config, seed=0):
    structures = Structures.from_atoms(atoms_list, dtype=torch.float64)
    return draw_labels(structures, config, torch.Generator().manual_seed(seed))


def copy_arrays(labelled, b):
    """Positions, forces, cell of copy ``b`` as numpy arrays."""
    start = int(labelled.first_atom[b])
    n = int(labelled.n_atoms[b])
    return (
        labelled.positions[start : start + n].numpy(),
        labelled.forces[start : start + n].numpy(),
        labelled.cell[b].numpy(),
    )


def two_atom_crystal(a=1.8):
    """CsCl-type 2-atom cubic cell: small enough for wrapping and repulsion to matter."""
    return Atoms("CO", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=a * np.eye(3), pbc=True)


def triclinic_crystal():
    cell = np.array([[3.1, 0.0, 0.0], [0.9, 2.9, 0.0], [-0.6, 0.7, 3.3]])
    return Atoms("CO", scaled_positions=[[0.1, 0.2, 0.05], [0.55, 0.6, 0.5]], cell=cell, pbc=True)


# --- 1. two-atom examples ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_two_atom_crystal_labels_match_hand_computation(seed):
    atoms = two_atom_crystal()
    config = label_preset("crystal")
    labelled = labels_of([atoms], config, seed)
    h0 = atoms.cell.array
    fractional0 = atoms.get_scaled_positions(wrap=False)
    volume0 = abs(np.linalg.det(h0))

    assert labelled.n_structures == 121
    total_repulsion = 0.0
    for b in range(121):
        level = PAPER_LEVELS[b % 11]
        scale = PAPER_SCALES[b // 11]
        assert float(labelled.noise_level[b]) == level
        assert float(labelled.strain_scale[b]) == pytest.approx(scale, abs=1e-12)
        assert bool(labelled.periodic[b])
        positions, forces, cell = copy_arrays(labelled, b)

        # H = H0(1+s) + U(-½,½)·0.1·V0^(1/3)
        distortion = cell - h0 * (1 + scale)
        assert np.all(np.abs(distortion) <= 0.5 * 0.1 * volume0 ** (1 / 3) + 1e-12)

        # displacement relative to the strained equilibrium sites, as a minimum image
        displacement = minimum_image(positions - fractional0 @ cell, cell)
        assert in_box_translate_exists(displacement, cell, level * 0.05 / 2).all()
        if level == 0:
            np.testing.assert_allclose(displacement, 0.0, atol=1e-12)

        e_rep, f_rep = hand_repulsion(positions, cell, True, 0.75)
        sigma, e_elastic = hand_elastic(h0, cell)
        total_repulsion += e_rep
        np.testing.assert_allclose(forces, -displacement + f_rep, rtol=1e-9, atol=1e-10)
        expected_energy = 0.5 * np.sum(displacement**2) + e_rep + e_elastic
        assert float(labelled.energy[b]) == pytest.approx(expected_energy, rel=1e-9, abs=1e-12)
        np.testing.assert_allclose(labelled.stress[b].numpy(), sigma, rtol=1e-9, atol=1e-12)

    # the cells really were distorted, and the repulsion was really exercised
    assert np.abs(labelled.cell[0].numpy() - 0.9 * h0).max() > 1e-3
    assert total_repulsion > 0


@pytest.mark.parametrize("seed", [0, 1])
def test_two_atom_molecule_labels_match_hand_computation(seed):
    atoms = molecule("CO")
    config = label_preset("molecule")
    labelled = labels_of([atoms] * 4, config, seed)
    reference = atoms.positions

    assert labelled.n_structures == 44
    total_repulsion = 0.0
    for b in range(44):
        level = PAPER_LEVELS[b % 11]
        assert float(labelled.noise_level[b]) == level
        assert float(labelled.strain_scale[b]) == 0.0
        assert not bool(labelled.periodic[b])
        positions, forces, cell = copy_arrays(labelled, b)
        np.testing.assert_array_equal(cell, 0.0)

        displacement = positions - reference
        assert np.all(np.abs(displacement) <= level * 0.1 / 2 + 1e-12)
        if level == 0:
            np.testing.assert_allclose(displacement, 0.0, atol=1e-12)
        e_rep, f_rep = hand_repulsion(positions, None, False, 0.7)
        total_repulsion += e_rep
        np.testing.assert_allclose(forces, -displacement + f_rep, rtol=1e-9, atol=1e-10)
        expected_energy = 0.5 * np.sum(displacement**2) + e_rep
        assert float(labelled.energy[b]) == pytest.approx(expected_energy, rel=1e-9, abs=1e-12)
        np.testing.assert_array_equal(labelled.stress[b].numpy(), 0.0)
    # the large levels really moved the atoms (a 32·δ level is ±1.6 Å)
    assert np.abs(copy_arrays(labelled, 10)[0] - reference).max() > 0.1
    assert total_repulsion > 0


def simple_cubic_1A():
    """One atom in a 1 Å cube: a level-32 draw (±0.8 Å) often needs wrapping."""
    return Atoms("C", positions=[[0.2, 0.3, 0.1]], cell=np.eye(3), pbc=True)


def diamond_primitive():
    """Strongly non-orthogonal (fcc) cell: rounding fractional coordinates is not the minimum
    image there, and a level-32 draw may be "wrapped" into a longer vector than the one drawn."""
    return bulk("C", "diamond", a=3.57)


@pytest.mark.parametrize("make_atoms", [simple_cubic_1A, diamond_primitive])
def test_displacements_are_minimum_images(make_atoms):
    """docs/design.md §1.1: displacements are wrapped to the *minimum image* in periodic cells.

    No strain, no cell noise and a negligible repulsion radius make the force label exactly -d.
    """
    atoms = make_atoms()
    cell = atoms.cell.array
    copies = 50
    config = LabelConfig(
        noise_levels=(32,), strain_scales=(0.0,), cell_noise=0.0, repulsion_radius=1e-3
    )
    labelled = labels_of([atoms] * copies, config, seed=0)
    np.testing.assert_allclose(
        labelled.cell.numpy(), np.broadcast_to(cell, (copies, 3, 3)), atol=1e-14
    )
    displacement = -labelled.forces.numpy()
    # the force label is the displacement of the returned positions (mod the lattice)
    raw = labelled.positions.numpy() - np.tile(atoms.positions, (copies, 1))
    np.testing.assert_allclose(
        minimum_image(raw, cell), minimum_image(displacement, cell), atol=1e-10
    )
    # it is a lattice translate of a draw from the box [-kδ/2, kδ/2]³ ...
    assert in_box_translate_exists(displacement, cell, 32 * 0.05 / 2).all()
    # ... and it is the shortest such translate (in the 1 Å cube, about 3/4 of the raw
    # draws are not minimum images, so an unwrapped displacement fails here too)
    shortest = np.linalg.norm(minimum_image(displacement, cell), axis=1)
    lengths = np.linalg.norm(displacement, axis=1)
    not_minimal = np.flatnonzero(lengths > shortest + 1e-9)
    assert len(not_minimal) == 0, (
        f"{len(not_minimal)} of {len(lengths)} displacements are not minimum images, e.g. "
        f"{displacement[not_minimal[0]]} (|d|={lengths[not_minimal[0]]:.3f}) "
        f"instead of |d|={shortest[not_minimal[0]]:.3f}"
    )


def test_label_noise_perturbs_forces_only_by_its_width():
    atoms = molecule("CH4")
    noisy_config = label_preset("molecule", label_noise=0.01, noise_levels=(0, 1, 2))
    labelled = labels_of([atoms] * 40, noisy_config, seed=3)
    residual = []
    for b in range(labelled.n_structures):
        positions, forces, _ = copy_arrays(labelled, b)
        _, f_rep = hand_repulsion(positions, None, False, 0.7)
        residual.append(forces - (-(positions - atoms.positions) + f_rep))
    residual = np.concatenate(residual)
    assert 0.008 < residual.std() < 0.012
    assert abs(residual.mean()) < 0.002


# --- 2. strained cells ------------------------------------------------------------------------


@pytest.mark.parametrize("make_atoms", [two_atom_crystal, triclinic_crystal])
@pytest.mark.parametrize("scale", [0.05, -0.05])
def test_pure_scaling_strain_matches_voigt_hand_computation(make_atoms, scale):
    atoms = make_atoms() if make_atoms is triclinic_crystal else make_atoms(3.0)
    h0 = atoms.cell.array
    config = LabelConfig(noise_levels=(0,), strain_scales=(scale,), cell_noise=0.0)
    labelled = labels_of([atoms], config)
    assert labelled.n_structures == 1

    cell = labelled.cell[0].numpy()
    np.testing.assert_allclose(cell, (1 + scale) * h0, rtol=1e-14, atol=1e-14)
    # atoms keep their fractional coordinates
    np.testing.assert_allclose(
        labelled.positions.numpy(), (1 + scale) * atoms.positions, atol=1e-12
    )

    sigma, energy = hand_elastic(h0, cell)
    stress = labelled.stress[0].numpy()
    np.testing.assert_allclose(stress, sigma, rtol=1e-12, atol=1e-14)
    # isotropic scaling: σ = E/(1-2ν)·ε·I with ε = ½((1+s)² - 1)
    strain = 0.5 * ((1 + scale) ** 2 - 1)
    np.testing.assert_allclose(stress, strain / (1 - 2 * 0.3) * np.eye(3), rtol=1e-12, atol=1e-14)
    assert float(labelled.energy[0]) == pytest.approx(energy, rel=1e-12)
    assert float(labelled.energy[0]) == pytest.approx(
        0.5 * 3 * strain**2 / (1 - 2 * 0.3) * abs(np.linalg.det(h0)), rel=1e-12
    )
    # tensile for a stretched cell, compressive for a compressed one
    assert np.all(np.sign(np.diag(stress)) == np.sign(scale))
    np.testing.assert_array_equal(labelled.forces.numpy(), 0.0)


def test_paper_strain_scales_give_stress_of_matching_sign():
    atoms = two_atom_crystal(3.0)
    config = LabelConfig(noise_levels=(0,), cell_noise=0.0)
    labelled = labels_of([atoms], config)
    assert labelled.n_structures == 11
    for b, scale in enumerate(PAPER_SCALES):
        cell = labelled.cell[b].numpy()
        np.testing.assert_allclose(cell, (1 + scale) * atoms.cell.array, atol=1e-13)
        sigma, energy = hand_elastic(atoms.cell.array, cell)
        np.testing.assert_allclose(labelled.stress[b].numpy(), sigma, rtol=1e-12, atol=1e-14)
        assert float(labelled.energy[b]) == pytest.approx(energy, rel=1e-12, abs=1e-15)
        trace = np.trace(labelled.stress[b].numpy())
        assert np.sign(trace) == np.sign(round(scale, 10))


@pytest.mark.parametrize("seed", [0, 5])
def test_randomly_distorted_cell_matches_voigt_hand_computation(seed):
    atoms = triclinic_crystal()
    h0 = atoms.cell.array
    config = LabelConfig(noise_levels=(0,))  # default strain scales and cell noise
    labelled = labels_of([atoms], config, seed)
    assert labelled.n_structures == 11
    volume0 = abs(np.linalg.det(h0))
    for b, scale in enumerate(PAPER_SCALES):
        cell = labelled.cell[b].numpy()
        distortion = cell - (1 + scale) * h0
        assert np.all(np.abs(distortion) <= 0.05 * volume0 ** (1 / 3) + 1e-12)
        assert np.abs(distortion).max() > 1e-4  # really distorted
        positions, _, _ = copy_arrays(labelled, b)
        # noise level 0: the atoms sit at their old fractional coordinates in the new cell
        np.testing.assert_allclose(
            positions, atoms.get_scaled_positions(wrap=False) @ cell, atol=1e-12
        )
        sigma, energy = hand_elastic(h0, cell)
        stress = labelled.stress[b].numpy()
        np.testing.assert_allclose(stress, stress.T, atol=1e-15)
        np.testing.assert_allclose(stress, sigma, rtol=1e-10, atol=1e-13)
        e_rep, _ = hand_repulsion(positions, cell, True, 0.75)
        assert float(labelled.energy[b]) == pytest.approx(energy + e_rep, rel=1e-10, abs=1e-14)


# --- 3. repulsion -----------------------------------------------------------------------------


def test_repulsion_between_two_close_atoms_in_a_molecule():
    direction = np.array([1.0, 2.0, 2.0]) / 3.0
    r = 0.5
    positions = np.array([[0.3, -0.2, 0.1], [0.3, -0.2, 0.1] + r * direction])
    atoms = Atoms("CH", positions=positions)
    config = label_preset("molecule", noise_levels=(0,))
    assert config.repulsion_radius == 0.7
    labelled = labels_of([atoms], config)
    forces = labelled.forces.numpy()

    assert float(labelled.energy[0]) == pytest.approx((1 - r**2 / 0.7**2) ** 2, rel=1e-12)
    # analytical -gradient: |F| = 4(1 - r²/R²) r / R², pushing the atoms apart
    magnitude = 4 * (1 - r**2 / 0.7**2) * r / 0.7**2
    np.testing.assert_allclose(forces[1], magnitude * direction, rtol=1e-12)
    np.testing.assert_allclose(forces[0], -forces[1], rtol=1e-12)
    assert forces[1] @ direction > 0 and forces[0] @ direction < 0

    # central finite difference of the hand pair energy
    h = 1e-6
    numeric = np.zeros((2, 3))
    for i, k in itertools.product(range(2), range(3)):
        plus, minus = positions.copy(), positions.copy()
        plus[i, k] += h
        minus[i, k] -= h
        e_plus = pair_energy(np.linalg.norm(plus[1] - plus[0]), 0.7)
        e_minus = pair_energy(np.linalg.norm(minus[1] - minus[0]), 0.7)
        numeric[i, k] = -(e_plus - e_minus) / (2 * h)
    np.testing.assert_allclose(forces, numeric, rtol=1e-7, atol=1e-9)

    # and of respmatch's own energy label (forces are the gradient of the energy label)
    numeric = np.zeros((2, 3))
    for i, k in itertools.product(range(2), range(3)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[i, k] += sign * h
            energies.append(float(labels_of([moved], config).energy[0]))
        numeric[i, k] = -(energies[0] - energies[1]) / (2 * h)
    np.testing.assert_allclose(forces, numeric, rtol=1e-7, atol=1e-9)


def test_no_repulsion_beyond_the_radius():
    atoms = Atoms("CH", positions=[[0, 0, 0], [0.71, 0, 0]])
    labelled = labels_of([atoms], label_preset("molecule", noise_levels=(0,)))
    assert float(labelled.energy[0]) == 0.0
    np.testing.assert_array_equal(labelled.forces.numpy(), 0.0)


def test_repulsion_across_the_periodic_boundary():
    # atom 0 near x = 0, atom 1 near x = a: 0.49 Å apart through the boundary, 3.6 Å inside
    a = 4.0
    positions = np.array([[0.1, 1.0, 1.2], [3.7, 1.2, 1.0]])
    atoms = Atoms("CC", positions=positions, cell=a * np.eye(3), pbc=True)
    config = label_preset("crystal", noise_levels=(0,), strain=False)
    assert config.repulsion_radius == 0.75
    labelled = labels_of([atoms], config)
    assert labelled.n_structures == 1
    np.testing.assert_allclose(labelled.cell[0].numpy(), atoms.cell.array)

    vector = positions[1] - np.array([a, 0, 0]) - positions[0]  # from atom 0 to atom 1's image
    r = np.linalg.norm(vector)
    assert r == pytest.approx(np.sqrt(0.4**2 + 0.2**2 + 0.2**2))
    closeness = 1 - r**2 / 0.75**2
    assert float(labelled.energy[0]) == pytest.approx(closeness**2, rel=1e-12)
    forces = labelled.forces.numpy()
    expected = 4 * closeness * vector / 0.75**2
    np.testing.assert_allclose(forces[1], expected, rtol=1e-12)
    np.testing.assert_allclose(forces[0], -expected, rtol=1e-12)
    assert forces[0, 0] > 0 and forces[1, 0] < 0  # pushed apart through the boundary
    e_rep, f_rep = hand_repulsion(positions, atoms.cell.array, True, 0.75)
    assert float(labelled.energy[0]) == pytest.approx(e_rep, rel=1e-12)
    np.testing.assert_allclose(forces, f_rep, rtol=1e-12)
    np.testing.assert_array_equal(labelled.stress.numpy(), 0.0)


# --- 4. reproducibility, presets, copy counts -------------------------------------------------


def test_same_seed_same_labels_different_seed_different_labels():
    structures = [two_atom_crystal(2.5), molecule("H2O")]
    config = label_preset("crystal")
    first = labels_of(structures, config, seed=7)
    second = labels_of(structures, config, seed=7)
    other = labels_of(structures, config, seed=8)
    for name in ("positions", "numbers", "cell", "periodic", "n_atoms", "forces", "stress",
                 "energy", "noise_level", "strain_scale"):
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert not torch.allclose(first.positions, other.positions)
    assert not torch.allclose(first.forces, other.forces)
    assert not torch.allclose(first.cell, other.cell)
    assert not torch.allclose(first.energy, other.energy)
    # the copy structure itself does not depend on the seed
    assert torch.equal(first.noise_level, other.noise_level)
    assert torch.equal(first.strain_scale, other.strain_scale)


def test_presets_hold_the_papers_values():
    molecule_config = label_preset("molecule")
    crystal_config = label_preset("crystal")
    assert molecule_config.displacement_step == 0.1
    assert molecule_config.repulsion_radius == 0.7
    assert molecule_config.strain is False
    assert crystal_config.displacement_step == 0.05
    assert crystal_config.repulsion_radius == 0.75
    assert crystal_config.strain is True
    for config in (molecule_config, crystal_config):
        assert tuple(config.noise_levels) == PAPER_LEVELS
        np.testing.assert_allclose(config.strain_scales, PAPER_SCALES, atol=1e-12)
        assert len(config.strain_scales) == 11
        assert config.cell_noise == 0.1
        assert config.youngs_modulus == 1.0
        assert config.poisson_ratio == 0.3
        assert config.spring_constant == 1.0
        assert LabelConfig.from_dict(config.to_dict()) == config


def test_preset_overrides_and_unknown_names():
    config = label_preset("molecule", displacement_step=0.2, noise_levels=(0, 5))
    assert config.displacement_step == 0.2
    assert tuple(config.noise_levels) == (0, 5)
    assert config.repulsion_radius == 0.7  # untouched
    assert label_preset("molecule").displacement_step == 0.1  # presets are not mutated
    with pytest.raises(ValueError, match="no-such-preset"):
        label_preset("no-such-preset")
    with pytest.raises((TypeError, ValueError)):
        label_preset("crystal", not_a_field=1)


def test_copy_counts_and_order():
    crystal, water = two_atom_crystal(2.5), molecule("H2O")
    labelled = labels_of([crystal, water], label_preset("crystal"))
    assert labelled.n_structures == 121 + 11
    assert labelled.n_atoms.tolist() == [2] * 121 + [3] * 11
    assert labelled.periodic.tolist() == [True] * 121 + [False] * 11
    assert labelled.positions.shape == (2 * 121 + 3 * 11, 3)
    assert labelled.forces.shape == labelled.positions.shape
    assert labelled.stress.shape == (132, 3, 3)
    assert labelled.energy.shape == (132,)
    expected_levels = [PAPER_LEVELS[i % 11] for i in range(121)] + list(PAPER_LEVELS)
    assert labelled.noise_level.tolist() == expected_levels
    expected_scales = [PAPER_SCALES[i // 11] for i in range(121)] + [0.0] * 11
    np.testing.assert_allclose(labelled.strain_scale.numpy(), expected_scales, atol=1e-12)
    np.testing.assert_array_equal(labelled.numbers[-3:].numpy(), water.numbers)
    np.testing.assert_array_equal(labelled.stress[121:].numpy(), 0.0)

    # the molecule preset does not strain crystals: one copy per noise level
    unstrained = labels_of([crystal, water], label_preset("molecule"))
    assert unstrained.n_structures == 22
    assert unstrained.strain_scale.abs().max() == 0
    np.testing.assert_allclose(
        unstrained.cell[:11].numpy(), np.broadcast_to(crystal.cell.array, (11, 3, 3)), atol=1e-15
    )


def test_copies_per_structure_draws_that_many_paper_pairs():
    crystal, water = two_atom_crystal(2.5), molecule("H2O")
    labelled = labels_of([crystal, water, crystal], label_preset("crystal", copies_per_structure=5))
    assert labelled.n_atoms.tolist() == [2] * 5 + [3] * 5 + [2] * 5
    assert set(labelled.noise_level.tolist()) <= set(PAPER_LEVELS)
    scales = labelled.strain_scale.numpy()
    assert np.isin(np.round(scales, 10), np.round(PAPER_SCALES, 10)).all()
    np.testing.assert_array_equal(scales[5:10], 0.0)  # the molecule is never strained
    # every drawn copy is labelled like the paper's pair it stands for: stress only when strained
    assert (labelled.stress[5:10] == 0).all()


# --- 5. export ---------------------------------------------------------------------------------


def test_export_labels_writes_readable_extxyz(tmp_path):
    crystal, water = two_atom_crystal(2.5), molecule("H2O")
    config = label_preset("crystal", noise_levels=(0, 4, 32), strain_scales=(-0.1, 0.0, 0.1))
    path = tmp_path / "labels.xyz"
    count = export_labels(path, Structures.from_atoms([crystal, water]), config, seed=11)
    assert count == 3 * 3 + 3

    frames = read(path, index=":", format="extxyz")
    assert len(frames) == count
    expected = labels_of([crystal, water], config, seed=11)  # export draws with this seed
    for b, atoms in enumerate(frames):
        positions, forces, cell = copy_arrays(expected, b)
        np.testing.assert_allclose(atoms.positions, positions, atol=1e-6)
        assert atoms.get_potential_energy() == pytest.approx(float(expected.energy[b]), rel=1e-6)
        np.testing.assert_allclose(atoms.get_forces(), forces, rtol=1e-6, atol=1e-7)
        assert atoms.info["noise_level"] == pytest.approx(float(expected.noise_level[b]))
        assert atoms.info["strain_scale"] == pytest.approx(float(expected.strain_scale[b]))
        if b < 9:
            assert atoms.pbc.all()
            np.testing.assert_allclose(atoms.cell.array, cell, atol=1e-6)
            s = expected.stress[b].numpy()
            voigt = [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]]
            np.testing.assert_allclose(atoms.get_stress(voigt=True), voigt, rtol=1e-6, atol=1e-9)
            assert atoms.info["strain_scale"] == pytest.approx((-0.1, 0.0, 0.1)[b // 3])
            assert atoms.info["noise_level"] == (0, 4, 32)[b % 3]
        else:
            assert not atoms.pbc.any()
            assert "stress" not in atoms.calc.results
            assert atoms.info["strain_scale"] == 0.0
    # a stretched copy carries a tensile stress label
    assert np.trace(frames[8].get_stress(voigt=False)) > 0
    assert np.trace(frames[0].get_stress(voigt=False)) < 0


def test_pair_repulsion_radii_from_the_shortest_distances_in_the_data():
    """Each element pair repels below a fraction of its shortest distance in the training set."""
    from respmatch.labels import with_pair_repulsion

    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    methane = molecule("CH4")
    config = with_pair_repulsion(label_preset("molecule", repulsion_data_fraction=0.8), [water, methane])
    radii = {(a, b): r for a, b, r in config.pair_repulsion_radii}
    h_h = min(np.linalg.norm(water.positions[1] - water.positions[2]), methane.get_distance(1, 2))
    assert radii[(1, 8)] == pytest.approx(0.8 * 0.96, abs=1e-4)
    assert radii[(1, 6)] == pytest.approx(0.8 * methane.get_distance(0, 1), abs=1e-4)
    assert radii[(1, 1)] == pytest.approx(0.8 * h_h, abs=1e-4)
    assert (6, 8) not in radii  # never within 3 Å in the data: the single radius applies
    assert with_pair_repulsion(label_preset("molecule"), [water]).pair_repulsion_radii == ()
    assert LabelConfig.from_dict(config.to_dict()) == config  # round trip through a checkpoint

    # An O–H pair at 0.7 Å: inside its own radius (0.768 Å), outside the single 0.7 Å one.
    pair = Atoms("OH", positions=[[0, 0, 0], [0.7, 0, 0]])
    fixed = replace(config, noise_levels=(0,))
    r_rep = radii[(1, 8)]
    labelled = labels_of([pair], fixed)
    assert float(labelled.energy[0]) == pytest.approx(pair_energy(0.7, r_rep), rel=1e-12)
    np.testing.assert_allclose(
        labelled.forces.numpy()[1], [4 * (1 - 0.49 / r_rep**2) * 0.7 / r_rep**2, 0, 0], rtol=1e-12
    )
    assert float(labels_of([pair], replace(fixed, pair_repulsion_radii=())).energy[0]) == 0.0
