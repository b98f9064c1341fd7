"""Shared fixtures: one small model trained once per test session on a diamond cell built in code."""

import pytest
from ase.build import bulk

import respmatch
from respmatch.labels import label_preset
from respmatch.train import TrainConfig


@pytest.fixture(scope="session")
def diamond():
    return bulk("C", "diamond", a=3.567, cubic=True)


@pytest.fixture(scope="session")
def trained_diamond(diamond, tmp_path_factory):
    """(path, TrainResult) of a short training: enough to pull rattled diamond back."""
    path = tmp_path_factory.mktemp("model") / "diamond.pt"
    labels = label_preset("crystal", noise_levels=(0, 1, 2, 4, 6, 8), strain_scales=(-0.05, 0.0, 0.05))
    config = TrainConfig(epochs=40, batch_size=4, seed=1, early_stop_patience=40)
    result = respmatch.train(
        [diamond], path, label_config=labels, config=config, progress=False,
        model_options={"cutoff": 3.5},
    )
    return path, result
