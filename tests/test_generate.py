"""Random structure search end to end: presets, reproducible starts, the store, resume, errors."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from ase.io import read

import respmatch
from respmatch.cli import main
from respmatch.record import RECORD_KEYS
from respmatch.search.generate import search_compositions
from respmatch.search.spec import search_preset
from respmatch.store import RunStore

FAST = {"stage0.max_steps": 20, "stage0.fmax": 1e-2}


def stored(path):
    return {kv["index"]: (atoms, kv) for atoms, kv in RunStore(path, resume=True).rows()}


def test_fixed_volume_run_stores_every_structure(trained_diamond, tmp_path):
    out = tmp_path / "run.db"
    summary = respmatch.generate(
        trained_diamond[0], "C4", 5, out, volume_per_atom=(4.0, 6.0), seed=2,
        batch_size=3, progress=False, options=FAST,
    )
    assert summary["stored"] == summary["relaxed"] == 5
    rows = stored(out)
    assert sorted(rows) == list(range(5))
    for index, (atoms, kv) in rows.items():
        assert atoms.get_chemical_formula() == "C4"
        # Constant-volume relaxation keeps each start's volume, sampled evenly over 4..6 Å³/atom.
        assert atoms.get_volume() / 4 == pytest.approx(4.0 + 0.5 * index, rel=1e-5)
        assert kv["seed"] == 2 and kv["stage"] == "constant-volume"
        assert 0 < kv["steps"] <= 20
        assert np.isfinite(kv["pseudo_energy_per_atom"])
    metadata = RunStore(out, resume=True).metadata
    assert metadata["preset"] == "fixed-volume" and metadata["composition"] == "C4"
    assert len(metadata["model_sha256"]) == 64


def test_search_compositions_shares_one_batch_and_reproduces_generate(trained_diamond, tmp_path):
    """Try i of a composition is structure i of ``generate`` with the same seed."""
    model = respmatch.load_model(trained_diamond[0])
    results = list(search_compositions(
        model, {"C4": 3, "C6": 2}, volume_per_atom=(4.0, 6.0), seed=5, batch_size=4,
        progress=False, options=FAST,
    ))
    assert sorted((a.info["composition"], a.info["index"]) for a in results) == [
        ("C4", 0), ("C4", 1), ("C4", 2), ("C6", 0), ("C6", 1)
    ]
    assert all(set(a.info) >= {"composition", *RECORD_KEYS} for a in results)  # as the store keeps them
    respmatch.generate(
        trained_diamond[0], "C4", 3, tmp_path / "c4.db", volume_per_atom=(4.0, 6.0), seed=5,
        batch_size=1, progress=False, options=FAST,
    )
    rows = stored(tmp_path / "c4.db")
    for atoms in results:
        if atoms.info["composition"] == "C4":
            reference, kv = rows[atoms.info["index"]]
            np.testing.assert_allclose(atoms.positions, reference.positions, atol=1e-4)
            assert atoms.info["pseudo_energy_per_atom"] == pytest.approx(kv["pseudo_energy_per_atom"], abs=1e-5)
            assert atoms.info["converged"] == kv["converged"] and atoms.info["steps"] == kv["steps"]
    with pytest.raises(ValueError, match="Xx"):
        list(search_compositions(model, {"C4": 1, "Xx2": 1}, volume_per_atom=5.0, progress=False))


def test_fast_fixed_volume_preset_ends_with_the_papers_fine_stage():
    fast, paper = search_preset("fixed-volume-fast"), search_preset("fixed-volume")
    assert fast.stages[-1] == paper.stages[0]
    assert fast.stages[0].cell == "constant-volume" and fast.stages[0].max_step > paper.stages[0].max_step


def test_starts_do_not_depend_on_batch_size(trained_diamond, tmp_path):
    """With zero relaxation steps the stored structures are the random starts themselves."""
    no_steps = {"stage0.max_steps": 0}
    for batch in (1, 4):
        respmatch.generate(
            trained_diamond[0], "C6", 4, tmp_path / f"b{batch}.db", volume_per_atom=5.0,
            batch_size=batch, progress=False, options=no_steps,
        )
    one, four = stored(tmp_path / "b1.db"), stored(tmp_path / "b4.db")
    for i in range(4):
        assert np.allclose(one[i][0].positions, four[i][0].positions)
        assert np.allclose(one[i][0].cell.array, four[i][0].cell.array)


def test_crystal_preset_uses_the_model_volume(trained_diamond, diamond, tmp_path):
    respmatch.generate(
        trained_diamond[0], "C8", 2, tmp_path / "c.db", preset="crystal", progress=False,
        options={"stage0.max_steps": 0, "stage1.max_steps": 0},
    )
    for atoms, _ in stored(tmp_path / "c.db").values():
        assert atoms.get_volume() == pytest.approx(diamond.get_volume(), rel=1e-4)


def test_molecule_preset_kicks_and_relaxes(trained_diamond, tmp_path):
    respmatch.generate(
        trained_diamond[0], "C4", 2, tmp_path / "m.db", preset="molecule", progress=False,
        options={"relax.max_steps": 5, "kick-relax.max_steps": 5},
    )
    for atoms, kv in stored(tmp_path / "m.db").values():
        assert not atoms.pbc.any() and kv["stage"] == "kick-relax" and kv["steps"] <= 10


def test_presets_hold_the_paper_protocols():
    molecule, crystal, fixed = (search_preset(n) for n in ("molecule", "crystal", "fixed-volume"))
    assert molecule.box == (10.0, 5.0, 5.0) and molecule.min_distance == 0.7
    assert [(s.fmax, s.max_steps, s.kick) for s in molecule.stages] == [(1e-3, 500, 0.0), (2e-4, 1000, 0.75)]
    assert [(s.cell, s.fmax, s.max_steps) for s in crystal.stages] == [
        ("constant-volume", 0.05, 100), ("full", 0.01, 2000)]
    assert crystal.min_distance == 1.0 and crystal.distortion == 0.5
    (stage,) = fixed.stages
    assert (stage.cell, stage.fmax, stage.max_steps, stage.max_step) == ("constant-volume", 5e-4, 500, 0.01)
    assert search_preset("crystal", **{"full-cell.fmax": 0.02}).stages[1].fmax == 0.02
    with pytest.raises(ValueError, match="unknown stage"):
        search_preset("crystal", **{"nope.fmax": 1})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"composition": "Xq4"}, "unknown formula"),
        ({"composition": "Si4"}, "not trained on element"),
        ({"n": 0}, "positive"),
        ({"composition": "C40", "preset": "molecule", "options": {"box": (1.0, 1.0, 1.0)}}, "too small"),
        ({"preset": "fixed-volume", "volume_per_atom": None}, "needs --volume-per-atom"),
    ],
)
def test_bad_input_is_a_clear_error(trained_diamond, tmp_path, kwargs, message):
    arguments = {"composition": "C4", "n": 2, "volume_per_atom": 5.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        respmatch.generate(trained_diamond[0], out=tmp_path / "x.db", progress=False, **arguments)
    assert not (tmp_path / "x.db").exists()  # nothing written for a run that cannot start


def test_existing_run_needs_resume(trained_diamond, tmp_path):
    out = tmp_path / "run.db"
    common = dict(volume_per_atom=5.0, progress=False, options=FAST)
    respmatch.generate(trained_diamond[0], "C4", 2, out, **common)
    with pytest.raises(FileExistsError, match="--resume"):
        respmatch.generate(trained_diamond[0], "C4", 2, out, **common)
    summary = respmatch.generate(trained_diamond[0], "C4", 3, out, resume=True, **common)
    assert summary["relaxed"] == 1 and summary["stored"] == 3


def test_killed_run_resumes_without_loss_or_repeats(trained_diamond, tmp_path):
    out = tmp_path / "run.db"
    n = 60
    run = [
        "generate", "--model", str(trained_diamond[0]), "--composition", "C8", "--n", str(n),
        "--out", str(out), "--volume-per-atom", "4:6", "--option", "stage0.max_steps=60",
        "--threads", "1", "--quiet",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "respmatch.cli", *run, "--batch-size", "4"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )

    def count():
        try:
            with sqlite3.connect(out) as db:
                return db.execute("select count(*) from systems").fetchone()[0]
        except sqlite3.OperationalError:  # not created yet
            return 0

    deadline = time.monotonic() + 120
    while count() < 5 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.stderr.read().decode()  # still running: a real kill
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = stored(out)
    assert 5 <= len(before) < n

    assert main([*run, "--resume", "--batch-size", "7"]) == 0
    after = stored(out)
    assert sorted(after) == list(range(n))  # nothing lost, no index twice
    with sqlite3.connect(out) as db:
        assert db.execute("select count(*) from systems").fetchone()[0] == n
    for index, (atoms, kv) in before.items():  # stored rows are untouched
        assert np.array_equal(after[index][0].positions, atoms.positions)
        assert after[index][1]["pseudo_energy_per_atom"] == kv["pseudo_energy_per_atom"]


def test_cli_generate_and_export(trained_diamond, tmp_path, capsys):
    out = tmp_path / "run.db"
    assert main([
        "generate", "--model", str(trained_diamond[0]), "--composition", "C4", "--n", "3",
        "--out", str(out), "--volume-per-atom", "5", "--quiet", "--option", "constant-volume.max-steps=10",
    ]) == 0
    assert "3 structures" in capsys.readouterr().out
    assert main(["export", str(out), "--out", str(tmp_path / "run.extxyz")]) == 0
    frames = read(tmp_path / "run.extxyz", ":")
    assert len(frames) == 3
    assert {"pseudo_energy_per_atom", "converged"} <= set(frames[0].info)
    assert main(["export", str(out), "--out", str(tmp_path / "run.cif")]) == 0
    assert len(read(tmp_path / "run.cif", ":")) == 3
    assert main(["generate", "--model", str(trained_diamond[0]), "--composition", "Si2", "--n", "1",
                 "--out", str(tmp_path / "bad.db"), "--volume-per-atom", "5", "--quiet"]) == 2
    assert "Si" in capsys.readouterr().err


def test_volume_range_run_cannot_be_extended(trained_diamond, tmp_path):
    """With a volume range, n spreads the volumes: a larger n would move every unstored index."""
    out = tmp_path / "run.db"
    common = dict(volume_per_atom=(4.0, 6.0), progress=False, options={"stage0.max_steps": 0})
    respmatch.generate(trained_diamond[0], "C4", 2, out, **common)
    with pytest.raises(ValueError, match="volume_sweep_size"):
        respmatch.generate(trained_diamond[0], "C4", 3, out, resume=True, **common)


def test_search_spec_travels_and_makes_the_same_starts(trained_diamond):
    """A spec is frozen and picklable; start i depends on (spec, i) only."""
    import pickle

    from respmatch.search.spec import SearchSpec

    model = trained_diamond[1].model
    spec = SearchSpec.build(model, "C4", 6, volume_per_atom=(4.0, 6.0), seed=3)
    copy = pickle.loads(pickle.dumps(spec))
    assert copy == spec and hash(copy) == hash(spec)
    for i in (5, 0, 2):
        np.testing.assert_array_equal(copy.start(i).positions, spec.start(i).positions)
        assert spec.start(i).get_volume() == pytest.approx((4.0 + 0.4 * i) * 4)
    assert not np.allclose(spec.start(0).positions, spec.start(1).positions)
    with pytest.raises(AttributeError):
        spec.seed = 4


def test_generate_takes_the_trained_model_or_its_file(trained_diamond, tmp_path):
    path, result = trained_diamond
    assert respmatch.model_checksum(result.model) == respmatch.model_checksum(respmatch.load_model(path))
    common = dict(volume_per_atom=5.0, seed=1, batch_size=2, progress=False, options=FAST)
    respmatch.generate(result, "C4", 3, tmp_path / "object.db", **common)
    respmatch.generate(path, "C4", 3, tmp_path / "file.db", **common)
    by_object, by_file = stored(tmp_path / "object.db"), stored(tmp_path / "file.db")
    for i in range(3):
        np.testing.assert_allclose(by_object[i][0].positions, by_file[i][0].positions, atol=1e-5)
    metadata = RunStore(tmp_path / "object.db", resume=True).metadata
    assert metadata["model_sha256"] == RunStore(tmp_path / "file.db", resume=True).metadata["model_sha256"]
    assert metadata["model"] is None  # in memory: only its checksum names it
