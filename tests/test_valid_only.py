"""Valid on demand (``generate --valid-only``): only molecules the judge accepts are stored, n of
them; invalid tries are kicked, then replaced.

The model is trained on H2 with a 2 Å cutoff: a start whose atoms lie farther apart feels no
force and ends as two H radicals (invalid), so plain generation in a 5 × 3 × 3 Å box gives few
valid molecules and the kicks have work to do.
"""

import re

import pytest
from ase import Atoms

import respmatch
from respmatch.cli import main
from respmatch.evaluate.molecules import judge
from respmatch.store import RunStore
from respmatch.train import TrainConfig

SEARCH = {"relax.max_steps": 100, "kick-relax.max_steps": 100, "box": [5.0, 3.0, 3.0], "kick-relax.kick": 1.0}


@pytest.fixture(scope="module")
def hydrogen_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "h2.pt"
    respmatch.train(
        [Atoms("H2", positions=[[0, 0, 0], [0.74, 0, 0]])], path, preset="molecule", progress=False,
        config=TrainConfig(epochs=15, batch_size=4, seed=0, early_stop_patience=30),
        model_options={"cutoff": 2.0, "l_max": 1, "nu_max": 2, "hidden": (8,), "n_radial": 4},
    )
    return path


def strictly_valid(path):
    return [judge(atoms)["strict"] for atoms, _ in RunStore(path, resume=True).rows()]


def test_only_valid_molecules_are_stored_and_the_run_stops_at_n(hydrogen_model, tmp_path):
    out = tmp_path / "valid.db"
    summary = respmatch.generate(
        hydrogen_model, "H2", 3, out, seed=1, batch_size=4, progress=False, options=SEARCH,
        valid_only=True, max_kicks=2,
    )
    rows = list(RunStore(out, resume=True).rows())
    assert summary["stored"] == len(rows) == 3 and all(strictly_valid(out))
    for _, kv in rows:
        assert kv["smiles"] == "[H][H]" and 0 <= kv["kicks"] <= 2
    assert summary["tries"] > 3 and summary["kicks"] > 0  # invalid tries were kicked and replaced
    assert summary["kicks_per_molecule"] == summary["kicks"] / 3
    assert summary["valid_unique"] == 1
    # Plain generation of the same starts: mostly invalid, so the option did the selecting.
    respmatch.generate(hydrogen_model, "H2", 8, tmp_path / "plain.db", seed=1, batch_size=4,
                       progress=False, options=SEARCH)
    assert sum(strictly_valid(tmp_path / "plain.db")) < 8


def test_cli_valid_only_and_its_limits(hydrogen_model, tmp_path, capsys):
    args = ["generate", "--model", str(hydrogen_model), "--composition", "H2", "--quiet", "--seed", "1",
            "--valid-only", "--n", "2"] + [f"--option={k}={v}" for k, v in SEARCH.items()]
    assert main([*args, "--out", str(tmp_path / "a.db")]) == 0
    assert "valid only:" in capsys.readouterr().out
    # One fresh start without kicks cannot give two molecules: the run says so in one line, exit 2.
    assert main([*args, "--max-tries", "1", "--max-kicks", "0", "--out", str(tmp_path / "b.db")]) == 2
    assert re.search("only [01] of 2 valid molecules", capsys.readouterr().err)
    with pytest.raises(ValueError, match="valid-only"):
        respmatch.generate(hydrogen_model, "H2", 1, tmp_path / "c.db", preset="fixed-volume",
                           volume_per_atom=10.0, valid_only=True, progress=False)
