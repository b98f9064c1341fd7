"""The HTML report without a browser: what the page holds, and bad input refused cleanly.

(The page in a real browser: test_report_browser.py.)
"""

import errno
import io
import json
import os
import re

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.io import read

import respmatch
from respmatch.cli import main
from respmatch.evaluate import evaluate
from respmatch.files import TEMPORARY_SUFFIX
from respmatch.reporting import from_structures, report
from respmatch.record import Record
from respmatch.store import RunStore

FAST = {"constant-volume.max_steps": 15}


def page_client(path) -> dict:
    """The JSON the page's script reads."""
    html = path.read_text()
    return json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>', html, re.S)[1])


@pytest.fixture(scope="module")
def run_db(trained_diamond, tmp_path_factory):
    """A real run: 12 C4 cells relaxed on the session's model, and the judge's JSON of it."""
    folder = tmp_path_factory.mktemp("run")
    path = folder / "run.db"
    respmatch.generate(
        trained_diamond[0], "C4", 12, path, volume_per_atom=(4.0, 6.0), seed=3, batch_size=6,
        progress=False, options=FAST,
    )
    evaluation = evaluate(path, "carbon")
    evaluation.write_json(folder / "eval.json")
    return path, folder / "eval.json", evaluation


def test_report_of_a_run_holds_every_structure_and_the_lowest_coordinates(run_db, tmp_path, capsys):
    path, eval_json, evaluation = run_db
    out = tmp_path / "report.html"
    assert main(["report", str(path), "--evaluation", str(eval_json), "--structures", "5", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    html = out.read_text()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", html)  # everything inline
    client = page_client(out)
    table = client["table"]
    stored = respmatch.store.read_run(path)
    assert table["index"] == [a.info["index"] for a in stored]
    assert table["energy"] == pytest.approx([a.info["pseudo_energy_per_atom"] for a in stored], abs=1e-6)
    assert table["verdict"] == [r["allotrope"] or r["coordination"] for r in evaluation.records]
    # Coordinates of exactly the 5 lowest-Ẽ structures, as CIF that ASE reads back to the same cell.
    lowest = sorted(range(12), key=lambda k: table["energy"][k])[:5]
    assert sorted(k for k, f in enumerate(table["file"]) if f >= 0) == sorted(lowest)
    for k in lowest:
        text = client["files"][table["file"][k]]["text"]
        back = read(io.StringIO(text), format="cif")
        assert back.cell.cellpar() == pytest.approx(stored[k].cell.cellpar(), abs=1e-4)
        difference = back.get_scaled_positions() - stored[k].get_scaled_positions()
        assert np.abs(difference - np.round(difference)).max() < 1e-5
    # Run card from the run's parameters, model card and training curve from its checkpoint.
    assert "fixed-volume" in html and "constant-volume.max_steps=15" in html
    assert "validation forces RMSE" in html and "training0" in client["figures"]
    assert {"map", "rates", "energies"} <= set(client["figures"])
    assert "recheck" not in client["figures"]


def test_several_runs_each_with_its_evaluation(run_db, trained_diamond, tmp_path):
    path, eval_json, _ = run_db
    other = tmp_path / "other.db"
    respmatch.generate(
        trained_diamond[0], "C2", 4, other, volume_per_atom=5.0, seed=1, progress=False, options=FAST
    )
    other_eval = tmp_path / "other.json"
    evaluate(other, "carbon").write_json(other_eval)
    out = tmp_path / "both.html"
    # Evaluations given in the other order still land on their own runs.
    report([path, other], out, evaluation=[other_eval, eval_json], structures=2)
    table = page_client(out)["table"]
    assert table["runs"] == ["run.db", "other.db"] and table["run"].count(1) == 4
    assert sum(f >= 0 for f in table["file"]) == 4  # 2 per composition


def test_recheck_results_in_the_rows_are_shown(tmp_path):
    """Rows updated by a physical re-check (keys physical_*, relax_*): section, column and ρ."""
    path = tmp_path / "rechecked.db"
    with RunStore(path, {"composition": "Si2", "preset": "crystal", "seed": 0, "n": 6}) as store:
        for k in range(6):
            atoms = bulk("Si", "diamond", a=5.43 + 0.02 * k)
            extra = {"physical_potential": "sevennet-0", "physical_energy_per_atom": -5.4 + 0.01 * k * k}
            if k < 5:
                extra.update(relax_converged=k != 2, relax_survived=True)
            store.write(atoms, Record(k, 0, 0.1 * k, True, 3, "x"), extra)
    out = tmp_path / "r.html"
    report(path, out, recheck=True)
    client = page_client(out)
    assert client["recheck"] and "recheck" in client["figures"]
    assert client["table"]["physical"] == pytest.approx([-5.4 + 0.01 * k * k for k in range(6)])
    html = out.read_text()
    assert "Physical re-check" in html and "sevennet-0" in html
    assert "80.0% of 5" in html  # relaxation converged
    assert re.search(r"Spearman ρ\(Ẽ, E_phys\), all</th><td>1.000", html)


def test_the_database_of_a_recheck_of_a_structure_file(tmp_path, capsys):
    """``recheck FILE --out OUT.db`` stores structures without run parameters or Ẽ: the report
    shows the structures and the re-check, and leaves out what needs a run (Ẽ plots, ρ)."""
    from ase.build import molecule
    from ase.io import write

    from respmatch.recheck import recheck

    source, checked, out = tmp_path / "molecules.extxyz", tmp_path / "checked.db", tmp_path / "r.html"
    molecules = [molecule(name) for name in ("H2O", "CH4", "NH3")]
    for k, atoms in enumerate(molecules):
        atoms.rattle(0.05, seed=k)
    write(source, molecules)
    recheck(source, "gfn1-xtb", relax=True, out=checked, progress=False)
    assert main(["report", str(checked), "--recheck", "--out", str(out)]) == 0
    capsys.readouterr()
    client, html = page_client(out), out.read_text()
    table = client["table"]
    assert table["index"] == [0, 1, 2] and table["natoms"] == [3, 5, 4]
    assert [client["table"]["compositions"][c] for c in table["composition"]] == ["H2O", "CH4", "H3N"]
    stored = respmatch.store.read_run(checked)
    assert table["physical"] == pytest.approx([a.info["relaxed_energy_per_atom"] for a in stored], abs=1e-6)
    assert table["energy"] == [None] * 3 and sorted(table["file"]) == [0, 1, 2]  # all three viewable
    assert client["recheck"] and "Physical re-check" in html and "gfn1-xtb" in html
    assert "survived relaxation</th><td>100.0% of 3" in html
    assert "run parameters</th><td>none recorded" in html and "preset</th>" not in html
    assert not {"recheck", "energies", "rates", "map"} & set(client["figures"])  # nothing to plot without Ẽ
    assert "Spearman" not in html and 'href="#plots"' not in html


def test_structures_in_memory_and_molecules(tmp_path):
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    # numpy scalars, as structures read back from extxyz carry them
    water.info.update(index=np.int64(0), pseudo_energy_per_atom=np.float64(-0.2), converged=np.True_, steps=np.int64(5), composition="H2O")
    out = report([water], tmp_path / "w.html")
    client = page_client(out)
    assert client["files"][0]["format"] == "xyz" and "map" not in client["figures"]
    back = read(io.StringIO(client["files"][0]["text"]), format="xyz")
    assert back.positions == pytest.approx(water.positions, abs=1e-6)
    assert from_structures([water]).rows[0]["volume"] is None


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_db, trained_diamond, tmp_path, capsys):
    path, eval_json, _ = run_db
    out = tmp_path / "report.html"

    import ase.db

    foreign = tmp_path / "foreign.db"
    ase.db.connect(str(foreign)).write(bulk("Cu"), energy_kind="dft")
    assert main(["report", str(foreign), "--out", str(out)]) == 2
    assert "not a respmatch run" in error_line(capsys)

    # The judge's file of another run: the same composition and size, other structures.
    other = tmp_path / "other.db"
    respmatch.generate(
        trained_diamond[0], "C4", 12, other, volume_per_atom=(4.0, 6.0), seed=4, batch_size=6,
        progress=False, options=FAST,
    )
    assert main(["report", str(other), "--evaluation", str(eval_json), "--out", str(out)]) == 2
    assert "the evaluation is of another run" in error_line(capsys)

    assert main(["report", str(path), "--recheck", "--out", str(out)]) == 2
    assert "no structure has physical re-check results" in error_line(capsys)

    # (Output paths, inputs that are no run database and full disks: test_faults.py.)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMPORARY_SUFFIX)]


def test_a_failed_write_leaves_no_file(run_db, tmp_path, monkeypatch, capsys):
    def disk_full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    assert main(["report", str(run_db[0]), "--out", str(tmp_path / "r.html")]) == 2
    assert "r.html: No space left on device (free some disk space)" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []
