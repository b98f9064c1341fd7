"""The command line as a user runs it: train, info, label, and clear errors."""

import json
import subprocess
import sys

import pytest
import torch
from ase.build import bulk, molecule
from ase.io import read, write

from respmatch.cli import main


@pytest.fixture()
def crystal_file(tmp_path):
    path = tmp_path / "diamond.extxyz"
    write(path, bulk("C", "diamond", a=3.567))
    return path


def test_train_info_and_use(crystal_file, tmp_path, capsys):
    model = tmp_path / "model.pt"
    code = main([
        "train", str(crystal_file), "--out", str(model), "--epochs", "3", "--quiet",
        "--label", "noise_levels=(0, 1, 2, 4)", "--label", "strain_scales=(-0.05, 0.0, 0.05)",
        "--model", "cutoff=3.0", "--train-option", "batch_size=4",
    ])
    assert code == 0
    assert "validation force RMSE" in capsys.readouterr().out
    checkpoint = torch.load(model, weights_only=True)
    assert checkpoint["training"]["preset"] == "crystal"
    assert checkpoint["label_config"]["noise_levels"] == [0, 1, 2, 4]
    assert main(["info", str(model)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["elements"] == [6] and info["model_config"]["cutoff"] == 3.0


def test_label_export(crystal_file, tmp_path):
    out = tmp_path / "labels.extxyz"
    assert main(["label", str(crystal_file), "--out", str(out), "--seed", "3"]) == 0
    frames = read(out, ":")
    assert len(frames) == 121
    assert frames[5].get_forces().shape == (2, 3)
    assert frames[5].get_stress().shape == (6,)


def test_molecule_preset_inferred(tmp_path):
    path = tmp_path / "water.xyz"
    write(path, [molecule("H2O"), molecule("NH3")])
    out = tmp_path / "labels.extxyz"
    assert main(["label", str(path), "--out", str(out)]) == 0
    assert len(read(out, ":")) == 22  # 11 noise levels each, no strains


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    assert main(["train", str(empty), "--out", str(tmp_path / "m.pt")]) == 2
    error = capsys.readouterr().err
    assert "empty.xyz" in error and "empty" in error


def test_unknown_override_is_rejected(crystal_file, tmp_path, capsys):
    assert main(["label", str(crystal_file), "--out", str(tmp_path / "x.extxyz"), "--label", "nope=1"]) == 2
    assert "--label: unknown option 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists()


def test_override_keys_keep_stage_names_with_dashes():
    """``kick-relax.fmax`` names a stage of the molecule preset; ``min-distance`` a field."""
    from respmatch.cli import _key_values
    from respmatch.search.spec import search_preset

    options = _key_values(["kick-relax.max-steps=7", "min-distance=0.9", "box=(6, 4, 4)"], "--option")
    assert options == {"kick-relax.max_steps": 7, "min_distance": 0.9, "box": (6, 4, 4)}
    preset = search_preset("molecule", **options)
    assert preset.stages[1].max_steps == 7 and preset.min_distance == 0.9


def test_generate_loads_no_package_it_does_not_use():
    """A `generate` process imports only what a search needs: the run layer, the model and the
    relaxer load none of the heavy packages of other stages (issue 24: start-up)."""
    heavy = ("pymatgen", "rdkit", "dask", "distributed", "sevenn", "chgnet", "plotly", "matplotlib")
    code = (
        "import sys, respmatch.cli, respmatch.search.generate, respmatch.run, respmatch.model\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
