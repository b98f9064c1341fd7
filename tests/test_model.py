"""Physics of the denoiser (docs/design.md §1.2): invariances, conservative forces and stress,
neighbour lists beyond the cell, batching, unseen elements, checkpoints and the ASE calculator.

All in float64.  The models are randomly perturbed away from their (nearly flat) initialisation
so that energies, forces and stress are far from zero.  Perturbations are drawn in float32 and
the model is then cast to float64, so every parameter is exactly representable in the float32
checkpoint format.
"""

import itertools
import re

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.neighborlist import neighbor_list

import respmatch
from respmatch.calculator import ResponseMatchingCalculator
from respmatch.model import Denoiser, ModelConfig, load_checkpoint, load_model, save_model
from respmatch.neighbors import build_graph
from respmatch.structures import Structures

RTOL = 1e-9  # float64 identities (invariances, batching)


def make_model(elements=(1, 6, 8), seed=0, **config):
    torch.manual_seed(seed)
    model = Denoiser(ModelConfig(elements=elements, **config))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return model.double().eval()


@pytest.fixture(scope="module")
def model():
    return make_model()


def evaluate(model, atoms_list, stress=None):
    structures = Structures.from_atoms(atoms_list, dtype=torch.float64)
    if stress is None:
        stress = bool(structures.periodic.all())
    out = model(structures, forces=True, stress=stress)
    return {k: v.detach().numpy() for k, v in out.items()}


def rattled(atoms, stdev=0.05, seed=1):
    atoms = atoms.copy()
    atoms.rattle(stdev=stdev, seed=seed)
    return atoms


def diamond_primitive():
    return rattled(bulk("C", "diamond", a=3.57), seed=2)


def diamond_cubic():
    return rattled(bulk("C", "diamond", a=3.57, cubic=True), seed=3)


def hexagonal_crystal():
    return rattled(bulk("CO", "wurtzite", a=2.6, c=4.2), seed=4)


def triclinic_crystal():
    cell = np.array([[3.3, 0.0, 0.0], [1.1, 3.0, 0.0], [-0.7, 0.8, 3.4]])
    scaled = [[0.05, 0.1, 0.0], [0.5, 0.45, 0.1], [0.2, 0.7, 0.55], [0.75, 0.15, 0.6]]
    return Atoms("COHC", scaled_positions=scaled, cell=cell, pbc=True)


def ethanol():
    return molecule("CH3CH2OH")


def random_rotation(seed, proper=True):
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) > 0) != proper:
        q[:, 0] *= -1
    return q


def close(actual, expected, rtol=RTOL, scale=None):
    """assert_allclose with an absolute tolerance relative to the size of the expected values."""
    expected = np.asarray(expected)
    size = np.abs(expected).max() if scale is None else scale
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(size, 1e-300))


def test_outputs_are_not_trivial(model):
    out = evaluate(model, [diamond_cubic()])
    assert np.abs(out["forces"]).max() > 1e-2
    assert np.abs(out["stress"]).max() > 1e-3
    out = evaluate(model, [ethanol()])
    assert np.abs(out["forces"]).max() > 1e-2
    assert out["energy"].shape == (1,) and out["atomic_energies"].shape == (9,)
    close(out["atomic_energies"].sum(), out["energy"][0])


# --- 1. invariances ---------------------------------------------------------------------------


@pytest.mark.parametrize("proper", [True, False], ids=["rotation", "reflection"])
@pytest.mark.parametrize("make_atoms", [ethanol, triclinic_crystal, diamond_cubic])
def test_rotation_invariance(model, make_atoms, proper):
    atoms = make_atoms()
    q = random_rotation(7, proper)  # row vectors: r -> r Q
    turned = atoms.copy()
    turned.positions = atoms.positions @ q
    if atoms.pbc.all():
        turned.cell = atoms.cell.array @ q
    reference, out = evaluate(model, [atoms]), evaluate(model, [turned])
    close(out["energy"], reference["energy"])
    close(out["atomic_energies"], reference["atomic_energies"])
    close(out["forces"], reference["forces"] @ q)
    if atoms.pbc.all():
        close(out["stress"][0], q.T @ reference["stress"][0] @ q)


@pytest.mark.parametrize("make_atoms", [ethanol, triclinic_crystal])
def test_translation_invariance(model, make_atoms):
    atoms = make_atoms()
    moved = atoms.copy()
    moved.positions += np.array([0.37, -1.21, 2.05])
    reference, out = evaluate(model, [atoms]), evaluate(model, [moved])
    close(out["energy"], reference["energy"])
    close(out["forces"], reference["forces"])
    if atoms.pbc.all():
        close(out["stress"], reference["stress"])


def test_forces_of_a_molecule_sum_to_zero(model):
    out = evaluate(model, [ethanol()])
    close(out["forces"].sum(0), np.zeros(3), scale=np.abs(out["forces"]).max())


@pytest.mark.parametrize("make_atoms", [ethanol, triclinic_crystal])
def test_permutation_invariance(model, make_atoms):
    atoms = make_atoms()
    permutation = np.random.default_rng(3).permutation(len(atoms))
    assert (permutation != np.arange(len(atoms))).any()
    shuffled = atoms[permutation]
    reference, out = evaluate(model, [atoms]), evaluate(model, [shuffled])
    close(out["energy"], reference["energy"])
    close(out["forces"], reference["forces"][permutation])
    close(out["atomic_energies"], reference["atomic_energies"][permutation])
    if atoms.pbc.all():
        close(out["stress"], reference["stress"])


@pytest.mark.parametrize("make_atoms", [diamond_primitive, triclinic_crystal])
def test_supercell_is_extensive(model, make_atoms):
    atoms = make_atoms()
    supercell = atoms.repeat((2, 2, 2))
    reference, out = evaluate(model, [atoms]), evaluate(model, [supercell])
    close(out["energy"], 8 * reference["energy"])
    close(out["forces"], np.tile(reference["forces"], (8, 1)))
    close(out["atomic_energies"], np.tile(reference["atomic_energies"], 8))
    close(out["stress"], reference["stress"])  # intensive


@pytest.mark.parametrize("make_atoms", [diamond_primitive, triclinic_crystal])
def test_periodic_images_are_equivalent(model, make_atoms):
    atoms = make_atoms()
    shifted = atoms.copy()
    integers = np.random.default_rng(5).integers(-2, 3, size=(len(atoms), 3))
    integers[0] = (1, -1, 2)  # at least one atom really moves to another image
    shifted.positions = atoms.positions + integers @ atoms.cell.array
    wrapped = atoms.copy()
    wrapped.positions += 0.9 * atoms.cell.array.sum(0)
    wrapped.wrap()
    reference = evaluate(model, [atoms])
    for other in (shifted, wrapped):
        out = evaluate(model, [other])
        close(out["energy"], reference["energy"])
        close(out["forces"], reference["forces"])
        close(out["stress"], reference["stress"])


def test_energy_is_local_and_smooth_at_the_cutoff(model):
    water, alcohol = molecule("H2O"), ethanol()
    far = water.copy()
    far.positions += (20.0, 3.0, -4.0)
    together = evaluate(model, [alcohol + far])
    apart = evaluate(model, [alcohol]), evaluate(model, [water])
    close(together["energy"][0], apart[0]["energy"][0] + apart[1]["energy"][0])
    close(together["forces"], np.concatenate([apart[0]["forces"], apart[1]["forces"]]))

    def dimer(r):
        return evaluate(model, [Atoms("CO", positions=[[0, 0, 0], [r, 0, 0]])])

    isolated = sum(evaluate(model, [Atoms(symbol)])["energy"][0] for symbol in "CO")
    assert abs(dimer(3.5)["energy"][0] - isolated) > 1e-5  # the pair does interact inside
    for r in (4.5 + 1e-6, 4.6):
        close(dimer(r)["energy"][0], isolated, rtol=1e-12)
        np.testing.assert_array_equal(dimer(r)["forces"], 0.0)
    # the envelope vanishes with its first two derivatives: E - E_isolated ~ (r_c - r)³
    near, nearer = dimer(4.5 - 1e-2), dimer(4.5 - 1e-3)
    assert abs(nearer["energy"][0] - isolated) < 1e-9
    assert np.abs(nearer["forces"]).max() < 1e-7
    ratio = (near["energy"][0] - isolated) / (nearer["energy"][0] - isolated)
    assert 300 < ratio < 3000


# --- 2. forces and stress against finite differences ------------------------------------------


def fd_tolerance(analytic, numeric, rtol=1e-6):
    scale = np.abs(analytic).max()
    np.testing.assert_allclose(numeric, analytic, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("make_atoms", [ethanol, diamond_cubic, triclinic_crystal])
def test_forces_match_finite_differences(model, make_atoms):
    atoms = make_atoms()
    atoms.calc = ResponseMatchingCalculator(model)
    analytic = atoms.get_forces()
    assert np.abs(analytic).max() > 1e-2
    numeric = calculate_numerical_forces(atoms, eps=1e-4)
    fd_tolerance(analytic, numeric)


@pytest.mark.parametrize("make_atoms", [diamond_cubic, hexagonal_crystal, triclinic_crystal])
def test_stress_matches_finite_differences(model, make_atoms):
    atoms = make_atoms()
    atoms.calc = ResponseMatchingCalculator(model)
    analytic = atoms.get_stress(voigt=False)
    assert np.abs(analytic).max() > 1e-3
    close(analytic, analytic.T)
    numeric = calculate_numerical_stress(atoms, eps=1e-5, voigt=False)
    fd_tolerance(analytic, numeric)


def test_stress_sign_follows_ase_convention(model):
    """(1/V) dE/dε: the energy change under a small isotropic strain is V·tr(σ)·ε."""
    atoms = triclinic_crystal()
    atoms.calc = ResponseMatchingCalculator(model)
    stress = atoms.get_stress(voigt=False)
    volume = atoms.get_volume()
    eps = 1e-5
    energies = []
    for sign in (1, -1):
        strained = atoms.copy()
        strained.set_cell(atoms.cell.array * (1 + sign * eps), scale_atoms=True)
        strained.calc = ResponseMatchingCalculator(model)
        energies.append(strained.get_potential_energy())
    derivative = (energies[0] - energies[1]) / (2 * eps)
    assert derivative == pytest.approx(volume * np.trace(stress), rel=1e-6)


# --- 3. neighbour lists when the cutoff exceeds the cell ---------------------------------------


def dense_diamond():
    """2-atom diamond primitive cell at 3.8 Å³/atom: lattice vectors ~2.2 Å, cutoff 4.5 Å."""
    atoms = bulk("C", "diamond", a=3.57)
    atoms.set_cell(atoms.cell.array * (3.8 * 2 / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
    assert atoms.get_volume() / len(atoms) == pytest.approx(3.8)
    return atoms


@pytest.mark.parametrize("rattle", [False, True])
def test_neighbor_list_beyond_the_cell_matches_ase(rattle):
    atoms = dense_diamond()
    if rattle:
        atoms = rattled(atoms, seed=6)
    assert np.linalg.norm(atoms.cell.array, axis=1).max() < 4.5 / 2
    structures = Structures.from_atoms([atoms], dtype=torch.float64)
    graph = build_graph(structures, 4.5)
    i, j, shift, distance = neighbor_list("ijSd", atoms, 4.5)
    assert len(graph.receiver) == len(i) > 100
    ours = np.sort(graph.vectors(structures).norm(dim=1).numpy())
    np.testing.assert_allclose(ours, np.sort(distance), rtol=1e-12)
    shifts = map(tuple, graph.shift.tolist())
    edges = set(zip(graph.receiver.tolist(), graph.sender.tolist(), shifts))
    assert edges == set(zip(i.tolist(), j.tolist(), map(tuple, shift.tolist())))
    assert len(edges) == len(i)  # no duplicates
    # layout invariants: sorted by receiver, slots enumerate each receiver's edges
    receiver = graph.receiver.numpy()
    assert (np.diff(receiver) >= 0).all()
    counts = np.bincount(receiver, minlength=len(atoms))
    assert graph.max_neighbors == counts.max()
    for atom in range(len(atoms)):
        slots = np.sort(graph.slot.numpy()[receiver == atom])
        np.testing.assert_array_equal(slots, np.arange(counts[atom]))


def test_dense_cell_energy_is_extensive(model):
    atoms = rattled(dense_diamond(), seed=8)
    reference = evaluate(model, [atoms])
    out = evaluate(model, [atoms.repeat((2, 2, 2))])
    close(out["energy"], 8 * reference["energy"])
    close(out["forces"], np.tile(reference["forces"], (8, 1)))
    close(out["stress"], reference["stress"])


def test_molecule_neighbor_list_matches_ase():
    atoms = ethanol()
    structures = Structures.from_atoms([atoms], dtype=torch.float64)
    graph = build_graph(structures, 2.0)
    i, j, distance = neighbor_list("ijd", atoms, 2.0)
    assert len(graph.receiver) == len(i)
    ours = np.sort(graph.vectors(structures).norm(dim=1).numpy())
    np.testing.assert_allclose(ours, np.sort(distance), rtol=1e-12)
    assert (graph.shift == 0).all()


# --- 4. batching --------------------------------------------------------------------------------


def test_batch_equals_one_structure_at_a_time(model):
    batch = [ethanol(), diamond_primitive(), molecule("H2O"), triclinic_crystal()]
    together = evaluate(model, batch, stress=True)
    start = 0
    for b, atoms in enumerate(batch):
        alone = evaluate(model, [atoms], stress=True)
        n = len(atoms)
        close(together["energy"][b], alone["energy"][0])
        close(together["forces"][start : start + n], alone["forces"])
        close(together["atomic_energies"][start : start + n], alone["atomic_energies"])
        if atoms.pbc.all():
            close(together["stress"][b], alone["stress"][0])
            assert np.abs(alone["stress"][0]).max() > 1e-3
        else:
            np.testing.assert_array_equal(together["stress"][b], 0.0)
        start += n
    assert start == len(together["forces"])


# --- 5. elements the model never saw -------------------------------------------------------------


def test_unknown_element_is_a_clear_error():
    model = make_model(elements=(6,))
    silicon = bulk("Si", "diamond", a=5.43)
    with pytest.raises(ValueError, match=r"\bSi\b"):
        model(Structures.from_atoms([silicon]))
    mixed = Atoms("CSi", positions=[[0, 0, 0], [1.9, 0, 0]])
    with pytest.raises(ValueError, match=r"\bSi\b") as info:
        model(Structures.from_atoms([mixed]))
    assert re.search(r"\bC\b", str(info.value))  # names what it does know, too
    silicon.calc = ResponseMatchingCalculator(model)
    with pytest.raises(ValueError, match=r"\bSi\b"):
        silicon.get_potential_energy()


# --- 6. checkpoints ----------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path):
    model = make_model(seed=4)
    with torch.no_grad():
        model.element_volumes.copy_(torch.tensor([5.5, 8.25, 12.0], dtype=torch.float64))
    path = tmp_path / "model.pt"
    save_model(path, model)

    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, dict)
    for key in ("model_config", "elements", "element_volumes", "state_dict"):
        assert key in raw
    assert raw["model_config"] == model.config.to_dict()
    assert ModelConfig.from_dict(raw["model_config"]) == model.config
    assert list(raw["elements"]) == [1, 6, 8]
    assert raw["element_volumes"] == {1: 5.5, 6: 8.25, 8: 12.0}
    assert set(raw["state_dict"]) == set(model.state_dict())
    assert load_checkpoint(path)["elements"] == raw["elements"]

    loaded = load_model(path, dtype=torch.float64)
    assert not loaded.training
    assert loaded.config == model.config
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    batch = [ethanol(), triclinic_crystal()]
    reference, out = evaluate(model, batch, stress=True), evaluate(loaded, batch, stress=True)
    for key in ("energy", "forces", "stress", "atomic_energies"):
        close(out[key], reference[key], rtol=1e-12)

    for atoms in (triclinic_crystal(), ethanol()):
        in_memory = atoms.copy()
        in_memory.calc = ResponseMatchingCalculator(model)
        from_file = atoms.copy()
        from_file.calc = respmatch.calculator(path)
        assert from_file.get_potential_energy() == pytest.approx(
            in_memory.get_potential_energy(), rel=1e-12
        )
        close(from_file.get_forces(), in_memory.get_forces(), rtol=1e-12)


def test_loading_a_missing_or_foreign_file_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "absent.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError):
        load_model(foreign)


# --- 7. the ASE calculator ------------------------------------------------------------------------


def test_calculator_rejects_partially_periodic_cells(model):
    slab = triclinic_crystal()
    slab.pbc = (True, True, False)
    slab.calc = ResponseMatchingCalculator(model)
    with pytest.raises(ValueError, match="periodic"):
        slab.get_potential_energy()


def test_calculator_on_a_molecule(model):
    atoms = ethanol()
    atoms.calc = ResponseMatchingCalculator(model)
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    reference = evaluate(model, [ethanol()], stress=False)
    assert energy == pytest.approx(float(reference["energy"][0]), rel=1e-12)
    close(forces, reference["forces"], rtol=1e-12)
    assert forces.shape == (9, 3)
    close(atoms.get_potential_energies().sum(), energy)
    with pytest.raises(PropertyNotImplementedError):
        atoms.get_stress()


def test_calculator_on_a_crystal(model):
    atoms = triclinic_crystal()
    atoms.calc = ResponseMatchingCalculator(model)
    reference = evaluate(model, [triclinic_crystal()], stress=True)
    assert atoms.get_potential_energy() == pytest.approx(float(reference["energy"][0]), rel=1e-12)
    close(atoms.get_forces(), reference["forces"], rtol=1e-12)
    s = reference["stress"][0]
    close(atoms.get_stress(), [s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]], rtol=1e-12)
    # moving an atom invalidates the cached results
    atoms.positions[0] += 0.1
    moved = evaluate(model, [atoms.copy()], stress=True)
    assert atoms.get_potential_energy() == pytest.approx(float(moved["energy"][0]), rel=1e-12)
    assert atoms.get_potential_energy() != pytest.approx(float(reference["energy"][0]), rel=1e-6)


def full_tensor_invariants(moments: np.ndarray) -> np.ndarray:
    """B features written out on the full symmetric Cartesian tensors (the definition), numpy."""
    from respmatch.model.angular import monomial_exponents

    position = {e: i for i, e in enumerate(monomial_exponents(3))}
    tensors = [moments[:, :, 0]]
    for degree in (1, 2, 3):
        tensor = np.zeros(moments.shape[:2] + (3,) * degree)
        for axes in itertools.product(range(3), repeat=degree):
            tensor[(slice(None), slice(None), *axes)] = moments[:, :, position[tuple(axes.count(a) for a in range(3))]]
        tensors.append(tensor)
    t0, t1, t2, t3 = tensors
    invariants = [t0] + [(t * t).reshape(*t.shape[:2], -1).sum(-1) for t in tensors]
    invariants += [
        np.einsum("nka,nkb,nkab->nk", t1, t1, t2),
        np.einsum("nkab,nkbc,nkca->nk", t2, t2, t2),
        np.einsum("nka,nkbc,nkabc->nk", t1, t2, t3),
        np.einsum("nkab,nkacd,nkbcd->nk", t2, t3, t3),
    ]
    return np.stack(invariants, -1).reshape(len(moments), -1)


def test_contraction_equals_the_full_tensor_definition():
    from respmatch.model.contraction import SymmetricContraction

    moments = torch.randn(5, 3, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = SymmetricContraction(l_max=3, nu_max=3).double()(moments)
    np.testing.assert_allclose(ours.numpy(), full_tensor_invariants(moments.numpy()), rtol=1e-10, atol=1e-10)


def test_neighbour_sum_gradients_and_second_derivatives():
    """The hand-written backward of the neighbour sum, checked by finite differences twice."""
    from respmatch.model.denoiser import NeighbourSum

    generator = torch.Generator().manual_seed(3)
    weights = torch.randn(2, 3, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    angular = torch.randn(5, 3, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    expected = torch.einsum("knw,mnw->nkm", weights, angular)
    close(NeighbourSum.apply(weights, angular).detach(), expected.detach())
    assert torch.autograd.gradcheck(NeighbourSum.apply, (weights, angular))
    assert torch.autograd.gradgradcheck(NeighbourSum.apply, (weights, angular))


@pytest.mark.parametrize("elements", [(6,), (6, 14), (1, 6, 7, 8, 16)])
def test_moments_equal_the_sum_of_embedded_edge_weights(elements):
    """A[i, (r, s), m] = Σ_edges radial_r · emb_s(sender) · Y_m, whichever way the model sums it."""
    model = Denoiser(ModelConfig(elements=elements)).double()
    torch.nn.init.normal_(model.sender_embedding.weight, generator=torch.Generator().manual_seed(0))
    rng = np.random.default_rng(0)
    atoms = Atoms(
        numbers=rng.choice(elements, 8), scaled_positions=rng.random((8, 3)), cell=3.6 * np.eye(3), pbc=True
    )
    structures = Structures.from_atoms([atoms])
    graph = build_graph(structures, model.config.cutoff)
    vectors = graph.vectors(structures)
    species = model.species(structures.numbers)
    distance = vectors.norm(dim=1)
    radial = model.radial_mix(model.radial(distance).T)
    sender = model.sender_embedding(species[graph.sender])
    angular = model.angular((vectors / distance[:, None]).T).T
    edge = radial[:, :, None, None] * sender[:, None, :, None] * angular[:, None, None, :]
    moments = torch.zeros(len(species), *edge.shape[1:], dtype=edge.dtype).index_add(0, graph.receiver, edge)
    expected = full_tensor_invariants(moments.flatten(1, 2).detach().numpy() / model.config.avg_neighbors)
    edges = model.edge_layout(graph, vectors, len(species))
    ours = model.invariant_features(species, graph, edges).detach().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-9, atol=1e-9)


def test_one_element_readout_equals_the_general_readout():
    """Folding the constant receiver embedding and the standardisation into the first layer."""
    model = Denoiser(ModelConfig(elements=(6,))).double()
    generator = torch.Generator().manual_seed(2)
    for embedding in (model.sender_embedding, model.receiver_embedding):
        torch.nn.init.normal_(embedding.weight, generator=generator)
    atoms = Atoms("C8", scaled_positions=np.random.default_rng(2).random((8, 3)), cell=3.6 * np.eye(3), pbc=True)
    structures = Structures.from_atoms([atoms])
    model.standardize_features(structures)
    graph = build_graph(structures, model.config.cutoff)
    edges = model.edge_layout(graph, graph.vectors(structures), len(structures.numbers))
    species = model.species(structures.numbers)
    features = (model.invariant_features(species, graph, edges) - model.feature_mean) / model.feature_scale
    conditioned = (model.receiver_embedding(species)[:, :, None] * features[:, None, :]).flatten(1)
    expected = model.readout(conditioned).squeeze(1) + model.element_energy(species).squeeze(1)
    close(model.atomic_energies(structures, graph, edges).detach(), expected.detach())


# --- 8. message passing (an option; the local model above stays the default) --------------------


@pytest.fixture(scope="module")
def passing_model():
    return make_model(cutoff=3.0, message_passing=2, seed=6)


def methanol():
    return rattled(molecule("CH3OH"), seed=8)


def formaldehyde():
    return rattled(molecule("H2CO"), seed=8)


@pytest.mark.parametrize("make_atoms", [methanol, triclinic_crystal])
def test_message_passing_is_invariant(passing_model, make_atoms):
    atoms = make_atoms()
    q = random_rotation(9, proper=False)
    permutation = np.random.default_rng(4).permutation(len(atoms))
    moved = atoms[permutation]
    moved.positions = moved.positions @ q + np.array([0.4, -1.3, 2.2])
    if atoms.pbc.all():
        moved.cell = atoms.cell.array @ q
    reference, out = evaluate(passing_model, [atoms]), evaluate(passing_model, [moved])
    assert np.abs(reference["forces"]).max() > 1e-2
    close(out["energy"], reference["energy"])
    close(out["atomic_energies"], reference["atomic_energies"][permutation])
    close(out["forces"], reference["forces"][permutation] @ q)
    if atoms.pbc.all():
        close(out["stress"][0], q.T @ reference["stress"][0] @ q)


def test_message_passing_forces_and_stress_match_finite_differences(passing_model):
    for atoms in (formaldehyde(), triclinic_crystal()):
        atoms.calc = ResponseMatchingCalculator(passing_model)
        fd_tolerance(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-4))
    stress = atoms.get_stress(voigt=False)
    assert np.abs(stress).max() > 1e-3
    fd_tolerance(stress, calculate_numerical_stress(atoms, eps=1e-5, voigt=False))


def test_message_passing_reaches_beyond_the_cutoff(passing_model):
    """A chain C-C-C-O, 2 Å apart, cutoff 3 Å: the first atom sees the second only, yet with two
    layers its energy depends on the fourth; a part of the molecule that no edge links to it
    still adds nothing."""
    local = make_model(cutoff=3.0, seed=6)

    def first_atom_energy(model, last):
        chain = Atoms("CCCO", positions=[[0, 0, 0], [2, 0, 0], [4, 0, 0], [last, 0.3, 0]])
        return evaluate(model, [chain])["atomic_energies"][0]

    assert abs(first_atom_energy(passing_model, 6.0) - first_atom_energy(passing_model, 5.9)) > 1e-6
    assert first_atom_energy(local, 6.0) == first_atom_energy(local, 5.9)
    pair = Atoms("CC", positions=[[0, 0, 0], [2, 0, 0]])
    far = Atoms("CO", positions=[[5.1, 0, 0], [7.0, 0, 0]])
    close(evaluate(passing_model, [pair + far])["atomic_energies"][:2], evaluate(passing_model, [pair])["atomic_energies"])


def test_message_passing_on_verlet_lists_is_exact(passing_model):
    """The relaxer's lists (pairs within cutoff + skin, cut at each step) give the model's
    energies and forces exactly, as a fresh neighbour list does."""
    from respmatch.search.verlet import VerletLists

    structures = Structures.from_atoms([methanol(), triclinic_crystal()], dtype=torch.float64)
    lists = VerletLists(passing_model.config.cutoff, skin=0.5)
    for step in range(3):
        fresh = passing_model(structures, stress=True)
        listed = passing_model(structures, lists.graph(structures), stress=True)
        for key in ("energy", "forces", "stress"):
            close(listed[key].detach().numpy(), fresh[key].detach().numpy(), rtol=1e-12)
        positions = structures.positions + 0.05 * torch.randn(structures.positions.shape, dtype=torch.float64)
        structures = Structures(positions, structures.numbers, structures.cell, structures.periodic, structures.n_atoms)


def test_message_passing_checkpoint_round_trip(passing_model, tmp_path):
    path = tmp_path / "passing.pt"
    save_model(path, passing_model)
    assert torch.load(path, weights_only=True)["model_config"]["message_passing"] == 2
    loaded = load_model(path, dtype=torch.float64)
    assert loaded.config == passing_model.config
    batch = [methanol(), triclinic_crystal()]
    reference, out = evaluate(passing_model, batch, stress=True), evaluate(loaded, batch, stress=True)
    for key in ("energy", "forces", "stress"):
        close(out[key], reference[key], rtol=1e-12)


def test_message_passing_standardises_every_layer():
    model = make_model(cutoff=3.0, message_passing=1, seed=2)
    structures = Structures.from_atoms([methanol(), ethanol()], dtype=torch.float64)
    model.standardize_features(structures)
    graph = build_graph(structures, 3.0)
    edges = model.edge_layout(graph, graph.vectors(structures), len(structures.numbers))
    with torch.no_grad():
        features = model.invariant_features(model.species(structures.numbers), graph, edges)
    assert features.shape[1] == sum(model.layer_widths) and len(model.layer_widths) == 2
    close(features.mean(0).numpy(), model.feature_mean.numpy())
    used = model.feature_scale > 1e-6  # features that are not constant zero here
    assert used[model.layer_widths[0] :].sum() > 10  # the interaction layer's too
    rms = features.pow(2).mean(0).sqrt() / model.feature_scale
    close(rms[used].numpy(), np.ones(int(used.sum())))
