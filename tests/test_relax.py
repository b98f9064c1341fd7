"""The batched FIRE relaxer against ASE's FIRE (+ FrechetCellFilter), and its bookkeeping."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

import respmatch
from respmatch.search import relax as relax_module
from respmatch.potential import Potential
from respmatch.search.relax import BatchRelaxer, FireState, Job, Stage, collapsing, relax


@pytest.fixture(scope="module")
def model(trained_diamond):
    return respmatch.load_model(trained_diamond[0], dtype=torch.float64)


def distorted_starts(diamond, n=3):
    starts = []
    for k in range(n):
        atoms = diamond.copy()
        atoms.rattle(0.08, seed=k)
        strain = np.eye(3) + 0.03 * np.random.default_rng(k).standard_normal((3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        starts.append(atoms)
    return starts


def ase_relax(atoms, path, cell, fmax, steps):
    atoms = atoms.copy()
    atoms.calc = respmatch.calculator(path)
    target = atoms if cell == "fixed" else FrechetCellFilter(atoms, constant_volume=cell == "constant-volume")
    optimizer = FIRE(target, logfile=None)
    converged = optimizer.run(fmax=fmax, steps=steps)
    return atoms, converged, optimizer.nsteps


@pytest.mark.parametrize("cell", ["full", "constant-volume", "fixed"])
def test_batched_relaxation_ends_where_ase_fire_ends(model, trained_diamond, diamond, cell):
    starts = distorted_starts(diamond)
    results = relax(model, starts, (Stage("s", fmax=1e-3, max_steps=300, cell=cell),), batch_size=2, dtype=torch.float64)
    for start, result in zip(starts, results):
        reference, converged, steps = ase_relax(start, trained_diamond[0], cell, 1e-3, 300)
        n = len(reference)
        assert result.converged == converged
        assert abs(result.energy / n - reference.get_potential_energy() / n) < 1e-4
        rms = np.sqrt(((result.atoms.positions - reference.positions) ** 2).sum(1).mean())
        assert rms < 0.01
        assert np.allclose(result.atoms.cell.array, reference.cell.array, atol=1e-3)
        assert result.steps == steps  # the same algorithm, step for step
        if cell == "constant-volume":
            assert result.atoms.get_volume() == pytest.approx(start.get_volume(), rel=1e-8)


def test_molecule_relaxation_matches_ase(model, trained_diamond):
    start = molecule("C6H6")[:6]  # a carbon ring, relaxed as a molecule
    start.rattle(0.05, seed=2)
    (result,) = relax(model, [start], (Stage("s", fmax=1e-3, max_steps=300),), dtype=torch.float64)
    reference, converged, steps = ase_relax(start, trained_diamond[0], "fixed", 1e-3, 300)
    assert result.converged == converged and result.steps == steps
    assert np.sqrt(((result.atoms.positions - reference.positions) ** 2).sum(1).mean()) < 0.01
    assert not result.atoms.pbc.any()


def test_max_steps_ends_a_stage_unconverged(model, diamond):
    (result,) = relax(model, distorted_starts(diamond, 1), (Stage("s", fmax=1e-9, max_steps=7, cell="full"),), dtype=torch.float64)
    assert result.steps == 7 and not result.converged


def test_refilled_batch_gives_the_same_results(model, diamond):
    starts = distorted_starts(diamond, 5)
    stages = (Stage("a", fmax=5e-3, max_steps=200, cell="constant-volume"), Stage("b", fmax=1e-3, max_steps=200, cell="full"))
    small = relax(model, starts, stages, batch_size=2, dtype=torch.float64)
    whole = relax(model, starts, stages, batch_size=5, dtype=torch.float64)
    assert [r.key for r in small] == list(range(5))
    for a, b in zip(small, whole):
        assert a.steps == b.steps and a.stage == b.stage == "b"
        assert a.energy == pytest.approx(b.energy, abs=1e-8)
        assert np.allclose(a.atoms.positions, b.atoms.positions, atol=1e-6)


def test_one_model_call_per_step_for_the_whole_batch(model, diamond):
    starts = distorted_starts(diamond, 4)
    relaxer = BatchRelaxer(model, batch_size=4, dtype=torch.float64)
    jobs = [Job(key=i, atoms=a, stages=(Stage("s", fmax=1e-9, max_steps=10),)) for i, a in enumerate(starts)]
    results = list(relaxer.run(jobs))
    assert len(results) == 4
    assert relaxer.model_calls == 11  # 10 steps + the final force evaluation, all four together


def test_kick_between_stages_is_reproducible(model, diamond):
    stages = (Stage("first", fmax=1e-2, max_steps=50), Stage("kicked", fmax=1e-9, max_steps=0, kick=0.75))
    start = distorted_starts(diamond, 1)
    (once,) = relax(model, start, stages, dtype=torch.float64, seed=3)
    (again,) = relax(model, start, stages, dtype=torch.float64, seed=3)
    (no_kick,) = relax(model, start, stages[:1], dtype=torch.float64, seed=3)
    assert np.array_equal(once.atoms.positions, again.atoms.positions)
    moved = np.abs(once.atoms.positions - no_kick.atoms.positions)
    assert moved.max() <= 0.75 and moved.max() > 0.05


def test_unknown_cell_mode_is_rejected():
    with pytest.raises(ValueError, match="cell must be one of"):
        Stage("s", fmax=1e-3, max_steps=10, cell="wobbly")


def test_collapsing_compares_the_cell_volume_with_the_stage_start(diamond):
    stage = Stage("full", fmax=1e-9, max_steps=50, cell="full")
    state = FireState.start([(0, Job(key=0, atoms=diamond.copy(), stages=(stage,)))], torch.float64, "cpu")
    assert not collapsing(state).any()
    # x_cell = n log F with F = 0.2^(1/3) I: the cell has a fifth of its starting volume
    shrunk = replace(state, x_cell=len(diamond) * math.log(0.2) / 3 * torch.eye(3, dtype=torch.float64)[None])
    assert collapsing(shrunk).all()


def test_a_collapsing_cell_leaves_the_batch_unconverged(model, diamond, monkeypatch):
    """A stretched cell that the model shrinks by more than the (here lowered) limit is stopped."""
    stretched = diamond.copy()
    stretched.set_cell(diamond.cell.array * 1.06, scale_atoms=True)
    stages = (Stage("full", fmax=1e-9, max_steps=300, cell="full"), Stage("never", fmax=1e-9, max_steps=10))
    monkeypatch.setattr(relax_module, "MIN_VOLUME_RATIO", 0.95)
    (result,) = relax(model, [stretched], stages, dtype=torch.float64)
    assert result.stage == "full (collapsed)" and not result.converged
    assert result.steps < 300
    assert result.atoms.get_volume() < 0.95 * stretched.get_volume()


def test_the_rm_model_is_a_potential(model):
    assert isinstance(model, Potential) and model.cutoff == model.config.cutoff


def anneal_stage(**fields):
    return Stage("anneal", **{"fmax": 1e-3, "max_steps": 300, "anneal_steps": 40, "temperature": 0.05, **fields})


def test_langevin_step_is_the_euler_maruyama_step(diamond):
    stage = anneal_stage(mobility=0.02, max_step=0.2)
    state = FireState.start([(0, Job(key=0, atoms=diamond.copy(), stages=(stage,)))], torch.float64, "cpu")
    state = replace(state, steps=torch.tensor([10]))
    n = len(diamond)
    generator = torch.Generator().manual_seed(0)
    forces = 0.5 * torch.randn(n, 3, generator=generator, dtype=torch.float64)
    forces[0] = torch.tensor([100.0, 0.0, 0.0])  # an overlap: its move is capped at max_step
    noise = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    moved = relax_module.langevin_step(state, forces, torch.zeros(1, 3, 3, dtype=torch.float64), noise)
    temperature = 0.05 * (1 - 10 / 40)  # falls linearly to zero over the 40 annealing steps
    expected = 0.02 * forces + math.sqrt(2 * 0.02 * temperature) * noise
    expected[0] = 0.2 * expected[0] / expected[0].norm()
    assert torch.allclose(moved.x - state.x, expected, atol=1e-12)
    assert int(moved.steps) == 11 and not moved.v.any()


def test_annealing_is_reproducible_whatever_the_batch(model, diamond):
    starts = distorted_starts(diamond, 4)
    stages = (anneal_stage(cell="full"),)
    one_by_one = relax(model, starts, stages, batch_size=1, dtype=torch.float64, seed=5)
    together = relax(model, starts, stages, batch_size=4, dtype=torch.float64, seed=5)
    other_seed = relax(model, starts, stages, batch_size=4, dtype=torch.float64, seed=6)
    for a, b, c in zip(one_by_one, together, other_seed):
        assert a.steps == b.steps
        assert np.allclose(a.atoms.positions, b.atoms.positions, atol=1e-9)
        assert not np.allclose(a.atoms.positions, c.atoms.positions, atol=1e-6)  # the noise is real


def test_an_annealed_start_ends_at_a_converged_minimum(model, trained_diamond, diamond):
    (start,) = distorted_starts(diamond, 1)
    stage = anneal_stage(fmax=1e-3)
    (result,) = relax(model, [start], (stage,), dtype=torch.float64, seed=1)
    assert result.converged and result.steps > stage.anneal_steps
    check = result.atoms.copy()
    check.calc = respmatch.calculator(trained_diamond[0])
    assert np.linalg.norm(check.get_forces(), axis=1).max() < 1e-3


def test_no_structure_converges_while_it_anneals(model, diamond):
    """A start already at a minimum still takes its annealing steps, then converges at once."""
    (relaxed,) = relax(model, distorted_starts(diamond, 1), (Stage("s", fmax=1e-6, max_steps=500),), dtype=torch.float64)
    (again,) = relax(model, [relaxed.atoms], (anneal_stage(temperature=0.0),), dtype=torch.float64)
    assert again.converged and again.steps == 40


@pytest.mark.parametrize("fields, problem", [
    ({"anneal_steps": 300}, "below max_steps"),
    ({"anneal_steps": -1}, "below max_steps"),
    ({"temperature": -0.1}, "temperature must be"),
    ({"mobility": 0.0}, "mobility above 0"),
])
def test_bad_annealing_settings_are_rejected(fields, problem):
    with pytest.raises(ValueError, match=problem):
        anneal_stage(**fields)


class FailingOn:
    """The test model, except that from call ``call`` on, while the whole batch is there, the
    forces of its structure ``which`` are NaN."""

    def __init__(self, model, call, which, batch):
        self.model, self.call, self.which, self.batch, self.calls = model, call, which, batch, 0
        self.cutoff = model.cutoff

    def __call__(self, structures, graph, **kwargs):
        out = self.model(structures, graph, **kwargs)
        self.calls += 1
        if self.calls >= self.call and len(structures.n_atoms) == self.batch:
            first = int(structures.n_atoms[: self.which].sum())
            out["forces"] = out["forces"].clone()
            out["forces"][first : first + int(structures.n_atoms[self.which])] = float("nan")
        return out


def test_a_non_finite_step_ends_that_structure_alone(model, diamond):
    """A structure whose step turns non-finite leaves the batch unconverged at its last finite
    state; the others relax as if it had not been there."""
    starts = distorted_starts(diamond, 3)
    stage = (Stage("full", fmax=1e-3, max_steps=300, cell="full"),)
    clean = relax(model, starts, stage, batch_size=3, dtype=torch.float64)
    broken = relax(FailingOn(model, call=5, which=1, batch=3), starts, stage, batch_size=3, dtype=torch.float64)
    assert broken[1].stage == "full (non-finite step)" and not broken[1].converged
    assert broken[1].steps == 4 and np.isfinite(broken[1].atoms.positions).all() and np.isfinite(broken[1].energy)
    for a, b in zip(clean[::2], broken[::2]):
        assert a.converged and b.converged and a.steps == b.steps
        assert np.allclose(a.atoms.positions, b.atoms.positions, atol=1e-9)


def relax_with(potential, starts, stages, batch_size, **settings):
    """``relax`` on a relaxer with these settings (check_every, max_atoms, cut_lists; skin)."""
    skin = settings.pop("skin", None)
    relaxer = BatchRelaxer(potential, batch_size=batch_size, dtype=torch.float64, **settings)
    relaxer.skin = relaxer.skin if skin is None else skin
    jobs = [Job(key=i, atoms=a.copy(), stages=stages, rng=np.random.default_rng([0, i])) for i, a in enumerate(starts)]
    return sorted(relaxer.run(jobs), key=lambda r: r.key), relaxer


def assert_same_results(these, those, atol=1e-9):
    assert [r.key for r in these] == [r.key for r in those]
    for a, b in zip(these, those):
        assert (a.steps, a.stage, a.converged) == (b.steps, b.stage, b.converged)
        assert a.energy == pytest.approx(b.energy, abs=atol)
        assert np.allclose(a.atoms.positions, b.atoms.positions, atol=atol)
        assert np.allclose(a.atoms.cell.array, b.atoms.cell.array, atol=atol)


def test_looking_at_the_batch_every_few_steps_gives_the_same_results(model, diamond):
    """A GPU batch is judged and refilled every few steps: structures that finish in between
    wait frozen, ones whose (here very thin) neighbour-list skin may be spent skip steps until
    the lists are renewed, and every structure ends as when the host looks at every step."""
    starts = distorted_starts(diamond, 5)
    stages = (
        Stage("a", fmax=5e-3, max_steps=30, cell="constant-volume", max_step=0.05),
        Stage("b", fmax=1e-3, max_steps=30, cell="full", kick=0.05),
    )
    every_step, _ = relax_with(model, starts, stages, batch_size=2, skin=0.02)
    every_few, relaxer = relax_with(model, starts, stages, batch_size=2, skin=0.02, check_every=4)
    assert_same_results(every_step, every_few)
    assert relaxer.model_calls % 4 == 0  # only whole intervals of steps ran


def test_uncut_lists_give_the_same_results(model, diamond):
    """Pairs out to cutoff + skin passed uncut (as on a GPU) add exact zeros to the model."""
    starts = distorted_starts(diamond, 3)
    stages = (Stage("s", fmax=1e-3, max_steps=100, cell="full"),)
    cut, _ = relax_with(model, starts, stages, batch_size=3)
    uncut, relaxer = relax_with(model, starts, stages, batch_size=3, cut_lists=False, check_every=4)
    assert model.zero_beyond_cutoff and not relaxer.cut_lists
    assert_same_results(cut, uncut)


class CountingAtoms:
    """The test model, recording the atoms and structures of every batch it is called on."""

    def __init__(self, model):
        self.model, self.cutoff, self.batches = model, model.cutoff, []

    def __call__(self, structures, graph, **kwargs):
        self.batches.append((len(structures.numbers), structures.n_structures))
        return self.model(structures, graph, **kwargs)


def test_the_atom_budget_is_never_exceeded(model, diamond):
    from ase.build import make_supercell

    small = distorted_starts(diamond, 4)  # 8 atoms each
    large = [make_supercell(a, np.diag([2, 1, 1])) for a in distorted_starts(diamond, 2)]  # 16 atoms
    starts = [small[0], large[0], small[1], small[2], large[1], small[3]]
    stages = (Stage("s", fmax=2e-3, max_steps=40, cell="full"),)
    counting = CountingAtoms(model)
    budgeted, relaxer = relax_with(counting, starts, stages, batch_size=10, max_atoms=30)
    assert max(atoms for atoms, _ in counting.batches) <= 30
    assert relaxer.largest_batch[1] <= 30 and max(n for _, n in counting.batches) >= 2
    whole, _ = relax_with(model, starts, stages, batch_size=10)
    assert_same_results(budgeted, whole)


def test_without_a_count_the_atom_budget_alone_sizes_the_batch(model, diamond):
    starts = distorted_starts(diamond, 5)  # 8 atoms each
    stages = (Stage("s", fmax=2e-3, max_steps=40, cell="full"),)
    counting = CountingAtoms(model)
    by_atoms, relaxer = relax_with(counting, starts, stages, batch_size=None, max_atoms=24)
    assert relaxer.largest_batch == (3, 24) and max(atoms for atoms, _ in counting.batches) <= 24
    by_count, _ = relax_with(model, starts, stages, batch_size=2)
    assert_same_results(by_atoms, by_count)


def test_a_structure_larger_than_the_budget_runs_alone(model, diamond):
    counting = CountingAtoms(model)
    results, _ = relax_with(counting, distorted_starts(diamond, 3), (Stage("s", fmax=1e-2, max_steps=5),), 10, max_atoms=5)
    assert len(results) == 3 and {n for _, n in counting.batches} == {1}


def test_bad_batch_settings_are_rejected(model):
    for settings in ({"batch_size": 0}, {"max_atoms": 0}, {"check_every": 0}):
        with pytest.raises(ValueError, match="must be positive"):
            BatchRelaxer(model, **settings)
