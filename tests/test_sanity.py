"""Training refuses data that cannot be meant and models that learnt nothing; resumed runs are
the same run (training: data checksum and options; generation: the model's checksum)."""

from __future__ import annotations

import math
import os
import shutil
from contextlib import suppress

import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import respmatch
from respmatch.errors import RespmatchError, RespmatchWarning
from respmatch.labels import label_preset
from respmatch.model import save_model
from respmatch.sanity import check_epoch, check_structures
from respmatch.store import read_run
from respmatch.train import TrainConfig

LABELS = label_preset("crystal", noise_levels=(0, 1, 2, 4), strain_scales=(-0.05, 0.0, 0.05))
QUICK = dict(label_config=LABELS, progress=False, model_options={"cutoff": 3.0})


def test_zero_epochs_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(RespmatchError, match="epochs"):
        respmatch.train([bulk("C", "diamond", a=3.567)], tmp_path / "m.pt", config=TrainConfig(epochs=0), **QUICK)
    assert list(tmp_path.iterdir()) == []


def test_a_cell_far_larger_than_the_cutoff_needs_is_refused(tmp_path):
    """Diamond in nm read as Å: 10x the lengths, 1000x the volume; it trained to a loss of 1e12."""
    absurd = bulk("C", "diamond", a=35.67)
    with pytest.raises(RespmatchError, match=r"Å³ per atom, more than a sphere of the cutoff"):
        respmatch.train([absurd], tmp_path / "m.pt", config=TrainConfig(epochs=2), **QUICK)
    assert list(tmp_path.iterdir()) == []


def test_atoms_without_neighbours_warn_and_data_without_any_is_refused():
    water = molecule("H2O")
    lone = Atoms("Ar", positions=[(0, 0, 0)])
    with pytest.warns(RespmatchWarning, match="1 of 4 atoms .* no neighbour within the cutoff 3.0"):
        check_structures([water, lone], cutoff=3.0)
    with pytest.raises(RespmatchError, match="no atom has a neighbour"):
        check_structures([lone, lone.copy()], cutoff=3.0)


def test_a_model_no_better_than_untrained_is_not_saved(tmp_path, trained_diamond):
    """A learning rate of 0: the weights never move, so validation never beats the untrained
    model; an earlier model at --out stays as it was."""
    out = tmp_path / "m.pt"
    shutil.copy(trained_diamond[0], out)
    before = out.read_bytes()
    config = TrainConfig(epochs=2, learning_rate=0.0)
    with pytest.raises(RespmatchError, match="learnt nothing useful and is not saved"):
        respmatch.train([bulk("C", "diamond", a=3.567)], out, config=config, **QUICK)
    assert out.read_bytes() == before


def test_a_diverged_or_exploded_loss_stops_training():
    initial = {"loss": 0.04}
    with pytest.raises(RespmatchError, match="diverged at epoch 3"):
        check_epoch(3, math.nan, 0.1, initial)
    with pytest.raises(RespmatchError, match="exploded at epoch 5"):
        check_epoch(5, 1.0, 1e12, initial)
    check_epoch(5, 1.0, 0.5, initial)  # worse than untrained, not yet exploded: training goes on


def test_train_resume_refuses_other_data_or_options_and_accepts_more_epochs(tmp_path):
    diamond = bulk("C", "diamond", a=3.567)
    out = tmp_path / "m.pt"
    with suppress(RespmatchError):  # one epoch may not beat the untrained model; the state stays
        respmatch.train([diamond], out, config=TrainConfig(epochs=1), **QUICK)
    with pytest.raises(RespmatchError, match="another run: data_sha256"):
        respmatch.train([bulk("C", "diamond", a=3.6)], out, config=TrainConfig(epochs=2), resume=True, **QUICK)
    other_labels = {**QUICK, "label_config": label_preset("crystal", noise_levels=(0, 1, 2, 8))}
    with pytest.raises(RespmatchError, match="label.noise_levels"):
        respmatch.train([diamond], out, config=TrainConfig(epochs=2), resume=True, **other_labels)
    with pytest.raises(RespmatchError, match="train.learning_rate"):
        config = TrainConfig(epochs=2, learning_rate=0.02)
        respmatch.train([diamond], out, config=config, resume=True, **QUICK)
    result = respmatch.train([diamond], out, config=TrainConfig(epochs=4), resume=True, **QUICK)
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]


def test_generate_resume_knows_the_model_by_its_checksum(tmp_path, trained_diamond, monkeypatch):
    model = tmp_path / "model.pt"
    shutil.copy(trained_diamond[0], model)
    run = tmp_path / "run.db"
    settings = dict(preset="fixed-volume", volume_per_atom=5.5, options={"stage0.max_steps": 5}, progress=False)
    respmatch.generate(model, "C2", 2, run, **settings)
    copy = tmp_path / "copy.pt"
    shutil.copy(model, copy)  # byte-identical: the same model
    respmatch.generate(copy, "C2", 3, run, resume=True, **settings)
    monkeypatch.chdir(tmp_path)
    respmatch.generate(os.path.join(".", "model.pt"), "C2", 4, "run.db", resume=True, **settings)
    assert [a.info["index"] for a in read_run(run)] == [0, 1, 2, 3]
    other, changed = tmp_path / "other.pt", respmatch.load_model(model)
    with torch.no_grad():
        next(changed.parameters()).add_(1e-3)  # other weights: another model
    save_model(other, changed)
    with pytest.raises(RespmatchError, match="model_sha256"):
        respmatch.generate(other, "C2", 5, run, resume=True, **settings)
