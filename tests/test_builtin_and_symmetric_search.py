"""Symmetric and ranked searches end to end, and the pretrained models shipped in the package."""

import json

import numpy as np
import pytest
import spglib

import respmatch
from respmatch.builtin import BUILTIN_MODELS, DATA
from respmatch.cli import main
from respmatch.store import read_run

NO_STEPS = {"stage0.max_steps": 0}


def test_symmetric_starts_mix_with_p1_ones_and_do_not_depend_on_batch_size(trained_diamond, tmp_path):
    """With zero relaxation steps the stored structures are the starts themselves."""
    for batch in (1, 3):
        respmatch.generate(
            trained_diamond[0], "C4", 6, tmp_path / f"b{batch}.db", volume_per_atom=5.0, batch_size=batch,
            progress=False, options={**NO_STEPS, "symmetry": 0.5, "space_groups": "2-230"},
        )
    one, three = read_run(tmp_path / "b1.db"), read_run(tmp_path / "b3.db")
    groups = []
    for a, b in zip(one, three):
        assert np.array_equal(a.positions, b.positions) and np.array_equal(a.cell.array, b.cell.array)
        assert a.get_volume() == pytest.approx(20.0, rel=1e-5)
        cell = (a.cell.array, a.get_scaled_positions(), a.numbers)
        groups.append(spglib.get_symmetry_dataset(cell, symprec=1e-3).number)
    assert all(g > 1 for g in groups[1::2])  # every second start is a symmetric one
    assert all(g == 1 for g in groups[0::2])  # random P1 cells of four atoms have no symmetry


@pytest.mark.parametrize("name", sorted(BUILTIN_MODELS))
def test_builtin_models_ship_load_and_generate(name, tmp_path, capsys):
    assert (DATA / f"{name}.pt").stat().st_size < 1_000_000
    model = respmatch.load_model(name)
    training = model.checkpoint["training"]
    assert training["history"] and training["best"]["val_forces_rmse"] < training["initial"]["forces_rmse"]
    ranked = ["--tries", "3", "--keep", "2"]  # a ranked crystal search; molecules are judged instead
    composition, extra, expected = {
        "mp20": ("SrTiO3", ranked, "lowest distinct structures"),
        "perov5": ("SrTiO3", ranked, "lowest distinct structures"),
        "diamond": ("C4", [*ranked, "--volume-per-atom", "5.0"], "lowest distinct structures"),
        "qm9": ("C6H6O", ["--n", "3"], "3 structures in"),
    }[name]
    out = tmp_path / "run.db"
    assert main(["generate", "--model", name, "--composition", composition, "--out", str(out), "--quiet",
                 "--option", "stage0.max_steps=5", *extra]) == 0
    stored = read_run(out)
    assert len(stored) == 3 and expected in capsys.readouterr().out
    assert all(a.pbc.any() == (name != "qm9") for a in stored)  # crystals from crystal models only
    assert main(["info", name]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["built_in"] == BUILTIN_MODELS[name] and info["epochs_run"] == len(training["history"])


@pytest.mark.parametrize("arguments, message", [
    (["--symmetry", "--space-groups", "227"], "no space group in 227 is compatible with O3SrTi"),
    (["--symmetry", "--space-groups", "12-x"], "--space-groups '12-x': expected"),
    (["--space-groups", "221"], "give --symmetry too"),
    (["--symmetry", "1.5"], "share of symmetric starts"),
    (["--keep-symmetry", "--option", "constant-volume.anneal_steps=10"], "cannot be combined with annealing"),
    (["--option", "constant-volume.anneal_steps=100"], "anneal_steps must be 0 or more and below max_steps"),
    (["--option", "constant-volume.temperature=-1"], "temperature must be 0 or more"),
])
def test_bad_symmetry_input_is_one_clear_line(tmp_path, capsys, arguments, message):
    out = tmp_path / "x.db"
    code = main(["generate", "--model", "mp20", "--composition", "SrTiO3", "--n", "2", "--out", str(out),
                 "--quiet", *arguments])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1 and not out.exists()


def test_unknown_builtin_model_is_one_clear_line(tmp_path, capsys):
    assert main(["info", "mp21"]) == 2
    error = capsys.readouterr().err.strip()
    assert "mp21: no such model file, and no built-in model of that name (built-in: diamond, mp20, perov5, qm9)" in error
