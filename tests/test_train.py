"""Training end to end on a diamond cell built in code: the loss falls, the model denoises."""

import importlib
from contextlib import suppress

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.optimize import FIRE

import respmatch
from respmatch.errors import RespmatchError
from respmatch.labels import label_preset
from respmatch.model import load_checkpoint
from respmatch.train import TrainConfig, fit_element_volumes, load_state, preset_for, save_best

train_module = importlib.import_module("respmatch.train")  # respmatch.train is also the function


@pytest.fixture(scope="module")
def trained(trained_diamond):
    return trained_diamond


def test_training_lowers_force_loss_tenfold(trained):
    _, result = trained
    before = result.initial["forces_rmse"] ** 2
    after = result.best["val_forces_rmse"] ** 2
    assert after < before / 10, (before, after)


def test_model_pulls_rattled_diamond_back(trained, diamond):
    path, _ = trained
    atoms = diamond.copy()
    atoms.rattle(0.1, seed=3)

    def rms_displacement(a):
        d = a.positions - diamond.positions
        d -= d.mean(0)  # a rigid translation costs nothing
        return np.sqrt((d**2).sum(1).mean())

    before = rms_displacement(atoms)
    atoms.calc = respmatch.calculator(path)
    FIRE(atoms, logfile=None).run(fmax=1e-3, steps=500)
    assert rms_displacement(atoms) < before / 3


def test_checkpoint_contents(trained, diamond):
    path, result = trained
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["elements"] == [6]
    assert checkpoint["element_volumes"][6] == pytest.approx(diamond.get_volume() / len(diamond), rel=1e-5)
    assert checkpoint["model_config"]["cutoff"] == 3.5
    assert checkpoint["label_config"]["noise_levels"] == [0, 1, 2, 4, 6, 8]
    assert checkpoint["training"]["best"]["epoch"] == result.best["epoch"]
    assert len(checkpoint["training"]["history"]) == len(result.history)


def test_resume_continues_where_it_stopped(diamond, tmp_path):
    path = tmp_path / "m.pt"
    labels = label_preset("crystal", noise_levels=(0, 1, 2, 4), strain_scales=(-0.05, 0.0, 0.05))
    common = dict(label_config=labels, progress=False, model_options={"cutoff": 3.0})
    full = respmatch.train([diamond], tmp_path / "full.pt", config=TrainConfig(epochs=4), **common)
    with suppress(RespmatchError):  # two epochs may not beat the untrained model: no model, but a state
        respmatch.train([diamond], path, config=TrainConfig(epochs=2), **common)
    resumed = respmatch.train([diamond], path, config=TrainConfig(epochs=4), resume=True, **common)
    assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3]
    for a, b in zip(full.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_resume_within_an_epoch_continues_exactly(diamond, tmp_path, monkeypatch):
    """A run stopped mid-epoch (its state written after every step) resumes at the step it
    reached, with the labels and order of that epoch: the same history as an unbroken run; and
    save_best writes from the final state the model that train wrote."""
    labels = label_preset("crystal", noise_levels=(0, 1, 2, 4), strain_scales=(-0.05, 0.0, 0.05))
    common = dict(label_config=labels, progress=False, model_options={"cutoff": 3.0},
                  config=TrainConfig(epochs=2, batch_size=2, early_stop_patience=5))
    original, steps = train_module.loss_terms, []

    def counted(*args, create_graph, **kwargs):  # training steps build the graph, validation not
        if create_graph:
            steps.append(1)
            if len(steps) == stop_at:
                raise KeyboardInterrupt
        return original(*args, create_graph=create_graph, **kwargs)

    monkeypatch.setattr(train_module, "loss_terms", counted)
    stop_at = None
    full = respmatch.train([diamond], tmp_path / "full.pt", **common)
    per_epoch = len(steps) // 2
    steps.clear()
    stop_at = per_epoch + 3  # two steps of the second epoch taken, the third interrupted
    path = tmp_path / "m.pt"
    with pytest.raises(KeyboardInterrupt):
        respmatch.train([diamond], path, state_every=0, **common)
    state = load_state(tmp_path / "m.pt.state")
    assert state["epoch"] == 0 and state["partial"]["epoch"] == 1 and state["partial"]["steps"] == 2
    steps.clear()
    stop_at = None
    resumed = respmatch.train([diamond], path, resume=True, **common)
    assert len(steps) == per_epoch - 2
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    for a, b in zip(full.history, resumed.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    save_best(tmp_path / "m.pt.state", tmp_path / "best.pt")
    written, saved = load_checkpoint(path), load_checkpoint(tmp_path / "best.pt")
    assert saved["training"] == written["training"] and saved["model_config"] == written["model_config"]
    assert all(torch.equal(saved["state_dict"][k], v) for k, v in written["state_dict"].items())


def test_element_volumes_least_squares():
    crystals = [bulk("NaCl", "rocksalt", a=5.6), bulk("Na", "bcc", a=4.2), bulk("Cl", "fcc", a=5.0)]
    volumes = fit_element_volumes(crystals, (11, 17))
    counts = np.array([[1, 1], [1, 0], [0, 1]])
    expected = np.linalg.lstsq(counts, [a.get_volume() for a in crystals], rcond=None)[0]
    assert np.allclose(volumes, expected)


def test_preset_inferred_from_periodicity(diamond):
    from ase.build import molecule

    assert preset_for([diamond]) == "crystal"
    assert preset_for([molecule("H2O")]) == "molecule"
    with pytest.raises(ValueError, match="mixes molecules and crystals"):
        preset_for([diamond, molecule("H2O")])


def test_resume_with_other_model_options_is_a_clear_error(diamond, tmp_path):
    path = tmp_path / "m.pt"
    labels = label_preset("crystal", noise_levels=(0, 2), strain_scales=(0.0,))
    with suppress(RespmatchError):  # one epoch may not beat the untrained model
        respmatch.train([diamond], path, config=TrainConfig(epochs=1), label_config=labels,
                        progress=False, model_options={"cutoff": 3.0})
    with pytest.raises(ValueError, match="cannot resume"):
        respmatch.train([diamond], path, config=TrainConfig(epochs=2), label_config=labels,
                        progress=False, model_options={"cutoff": 3.0, "n_radial": 4}, resume=True)


def test_element_volumes_are_never_negative():
    # Na and Cl always in a 1:1 ratio: lstsq's minimum-norm answer is not unique; nnls stays >= 0.
    crystals = [bulk("NaCl", "rocksalt", a=5.6), bulk("NaCl", "rocksalt", a=5.7) * (2, 1, 1)]
    assert (fit_element_volumes(crystals, (11, 17)) >= 0).all()


def test_inverse_variance_weighting_by_hand():
    """Copies weigh 1/max(k,1)²: a hand-made batch of two copies gives the hand-computed mean."""
    from respmatch.labels import LabelledStructures
    from respmatch.model import Denoiser, ModelConfig
    from respmatch.train import copy_weights, loss_terms

    levels = torch.tensor([0.0, 0.5, 2.0, 32.0])
    assert torch.allclose(copy_weights(levels, "inverse-variance"), torch.tensor([1, 1, 0.25, 1 / 1024]))
    assert torch.equal(copy_weights(levels, "uniform"), torch.ones(4))
    with pytest.raises(ValueError, match="noise_weighting"):
        copy_weights(levels, "sigma")

    model = Denoiser(ModelConfig(elements=(6,))).double()
    torch.nn.init.zeros_(model.readout[-1].weight)  # predicts zero forces: the error is the label
    positions = torch.tensor([[0.0, 0, 0], [1.4, 0, 0], [5.0, 0, 0], [6.5, 0, 0]], dtype=torch.float64)
    forces = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 3.0, 0], [0, -3.0, 0]], dtype=torch.float64)
    batch = LabelledStructures(
        positions=positions,
        numbers=torch.full((4,), 6),
        cell=torch.zeros(2, 3, 3, dtype=torch.float64),
        periodic=torch.tensor([False, False]),
        n_atoms=torch.tensor([2, 2]),
        forces=forces,
        stress=torch.zeros(2, 3, 3, dtype=torch.float64),
        energy=torch.zeros(2, dtype=torch.float64),
        noise_level=torch.tensor([1.0, 3.0], dtype=torch.float64),
        strain_scale=torch.zeros(2, dtype=torch.float64),
    )
    terms = loss_terms(model, batch, create_graph=False, noise_weighting="inverse-variance")
    # Per-atom mean squared components: 1/3 (copy 1) and 9/3 (copy 2), weights 1 and 1/9.
    expected = (2 * 1 * (1 / 3) + 2 * (1 / 9) * 3) / (2 * 1 + 2 * (1 / 9))
    assert float(terms["forces"]) == pytest.approx(expected)
    assert float(terms["forces_plain"]) == pytest.approx((2 / 3 + 2 * 3) / 4)
