"""The physical re-check: GFN2-xTB on molecules, SevenNet-0 and CHGNet on silicon, the store
update and its resume, the batched potential seam, the CLI and the judgement on top.

Each potential is loaded once per test session (``ase_calculator`` and ``batched_potential``
keep one per process); SevenNet-0 alone takes seconds to load."""

from importlib.metadata import PackageNotFoundError

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import write

from respmatch.cli import main
from respmatch.evaluate import evaluate
from respmatch.recheck import recheck
from respmatch.recheck import potentials
from respmatch.recheck import run as run_module
from respmatch.recheck.check import RecheckSettings, recheck_chunk
from respmatch.record import Record
from respmatch.store import RunStore, read_run


def relaxed_atoms(start, record):
    cell = record.get("relaxed_cell")
    return Atoms(start.numbers, record["relaxed_positions"], cell=cell, pbc=cell is not None)


def sorted_distances(atoms):
    return np.sort(atoms.get_all_distances(mic=atoms.pbc.all()).ravel())


@pytest.mark.parametrize("name", ["H2O", "CH4"])
def test_xtb_relaxes_a_rattled_molecule_back_and_keeps_its_smiles(name):
    start = molecule(name)
    start.rattle(0.1, seed=1)
    (record,) = recheck_chunk([(7, start)], RecheckSettings("gfn2-xtb", relax=True))
    assert record["key"] == 7 and record["physical_version"].startswith("tblite ")
    assert record["relax_converged"] and record["relax_survived"]
    assert record["relaxed_energy_per_atom"] < record["physical_energy_per_atom"]
    assert record["physical_fmax"] > 0.5  # the rattled geometry is off its minimum
    back = relaxed_atoms(start, record)
    assert np.allclose(sorted_distances(back), sorted_distances(molecule(name)), atol=0.05)


def test_xtb_changes_a_far_off_geometry():
    start = molecule("CH4")
    start.positions[1] *= 2.4  # one hydrogen pulled 1.5 Å away: CH3 and H
    (record,) = recheck_chunk([(0, start)], RecheckSettings("gfn2-xtb", relax=True))
    assert record["relax_converged"] and not record["relax_survived"]
    assert record["relax_rms_displacement"] > 0.3
    assert np.allclose(sorted_distances(relaxed_atoms(start, record)), sorted_distances(molecule("CH4")), atol=0.05)


@pytest.fixture(scope="module")
def silicon():
    return bulk("Si", "diamond", a=5.43)


def rattled(silicon):
    atoms = silicon.copy()
    atoms.rattle(0.05, seed=3)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) * 1.04 + [[0, 0.02, 0], [0, 0, 0], [0, 0, 0]]), scale_atoms=True)
    return atoms


@pytest.mark.parametrize("name", ["sevennet-0", "chgnet"])
def test_crystal_potential_on_a_silicon_cell(name, silicon):
    atoms = silicon.copy()
    atoms.calc = potentials.ase_calculator(name)
    assert np.isfinite(atoms.get_potential_energy())
    assert atoms.get_forces().shape == (2, 3) and np.abs(atoms.get_forces()).max() < 1e-3  # by symmetry
    assert atoms.get_stress().shape == (6,) and np.isfinite(atoms.get_stress()).all()

    start = rattled(silicon)
    (record,) = recheck_chunk([(0, start)], RecheckSettings(name, relax=True, fmax=0.02))
    assert record["relax_converged"] and record["relax_survived"]
    back = relaxed_atoms(start, record)
    # Back to diamond: every atom 4 neighbours at one bond length, PBE-like (2.35-2.40 Å).
    distances = back.get_all_distances(mic=True)[0]
    bond = np.sort(distances[distances > 0])[0]
    assert 2.33 < bond < 2.41
    assert np.allclose(back.cell.cellpar()[3:], 60, atol=0.5)  # the fcc primitive cell's angles

    # The potential seam: the RM search's batched relaxer, driving the potential's batched form
    # (two cells per call), ends where ASE's FIRE on FrechetCellFilter ends.
    other = silicon.copy()
    other.rattle(0.04, seed=5)
    batched, _ = recheck_chunk([(0, start), (1, other)], RecheckSettings(name, relax=True, fmax=0.02, batch_size=2))
    assert batched["relax_converged"]
    assert batched["relaxed_energy_per_atom"] == pytest.approx(record["relaxed_energy_per_atom"], abs=2e-4)
    assert np.allclose(batched["relaxed_cell"], record["relaxed_cell"], atol=0.02)


def molecule_run(path, names=("H2O", "CH4", "NH3", "H2O")):
    """A run database as ``generate`` writes it, of rattled molecules."""
    with RunStore(path, {"composition": "test"}) as store:
        for index, name in enumerate(names):
            atoms = molecule(name)
            atoms.rattle(0.05, seed=index)
            store.write(atoms, Record(index, 0, -0.1 * index, index != 3, 10, "relax"))
    return path


def test_recheck_updates_the_run_rows_and_resumes_after_a_kill(tmp_path, monkeypatch):
    path = molecule_run(tmp_path / "run.db")
    calls = []
    real_chunk = run_module.recheck_chunk

    def killed_after_two(items, settings):
        calls.append([key for key, _ in items])
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real_chunk(items, settings)

    monkeypatch.setattr(run_module, "recheck_chunk", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        recheck(path, relax=True, chunk_size=1, progress=False)
    stored = read_run(path)
    assert len(stored) == 4 and sum("physical_potential" in a.info for a in stored) == 2

    with pytest.raises(FileExistsError, match="--resume"):
        recheck(path, relax=True, progress=False)
    with pytest.raises(ValueError, match="rechecked with"):
        recheck(path, relax=True, fmax=0.1, resume=True, progress=False)

    monkeypatch.setattr(run_module, "recheck_chunk", real_chunk)
    summary = recheck(path, relax=True, resume=True, progress=False)
    assert summary["rechecked"] == 2 and summary["selected"] == 4  # only the rest
    stored = read_run(path, relaxed=True)
    assert [a.info["index"] for a in stored] == [0, 1, 2, 3]  # one row each: updated, not added
    assert all(a.info["physical_potential"] == "gfn2-xtb" and a.info["relax_survived"] for a in stored)
    assert all(isinstance(a.info["relaxed"], Atoms) for a in stored)
    assert stored[0].info["pseudo_energy_per_atom"] == 0.0  # the run's own keys stay

    again = recheck(path, relax=True, resume=True, progress=False)
    assert again["rechecked"] == 0


def test_top_and_only_converged_choose_per_composition(tmp_path):
    path = molecule_run(tmp_path / "run.db", names=("H2O", "H2O", "H2O", "H2O"))
    summary = recheck(path, top=2, only_converged=True, progress=False)
    assert summary["selected"] == 2
    energies = {a.info["index"]: "physical_energy_per_atom" in a.info for a in read_run(path)}
    assert energies == {0: False, 1: True, 2: True, 3: False}  # 3 is lowest in Ẽ but unconverged


def test_cli_recheck_and_evaluate_molecules(tmp_path, capsys):
    source = tmp_path / "mols.extxyz"
    starts = [molecule("H2O"), molecule("CH4")]
    starts[1].positions[1] *= 2.4
    for k, atoms in enumerate(starts):
        atoms.info.update(pseudo_energy_per_atom=-float(k), converged=True, index=0)
    write(source, starts)
    out = tmp_path / "checked.db"
    assert main(["recheck", str(source), "--relax", "--out", str(out), "--quiet"]) == 0
    assert "rechecked 2 of 2" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--kind", "molecule"]) == 0
    rows = dict(line.split()[:2] for line in capsys.readouterr().out.splitlines() if len(line.split()) == 2)
    assert rows["strict_valid_before_refinement"] == "0.5" and rows["strict_valid_after_refinement"] == "1"
    assert main(["recheck", str(source), "--relax", "--out", str(out), "--quiet"]) == 2  # not without --resume


def bad_input_cases(tmp_path):
    water = tmp_path / "water.extxyz"
    write(water, molecule("H2O"))
    francium = tmp_path / "fr.extxyz"
    write(francium, Atoms("FrH", [[0, 0, 0], [0, 0, 2.3]]))
    return {
        "unknown potential": ([str(water), "--potential", "mace"], "unknown potential 'mace'"),
        "molecule to a crystal potential": ([str(water), "--potential", "sevennet-0"], "is a crystal potential"),
        "element not covered": ([str(francium)], "does not cover element(s) Fr"),
        "structure file without --out": ([str(water)], "give --out"),
    }


@pytest.mark.parametrize("case", ["unknown potential", "molecule to a crystal potential", "element not covered",
                                  "structure file without --out"])
def test_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    arguments, message = bad_input_cases(tmp_path)[case]
    out = tmp_path / "out.db"
    if case != "structure file without --out":
        arguments += ["--out", str(out)]
    assert main(["recheck", *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error
    assert not out.exists()


def test_cli_missing_package_is_one_line(tmp_path, capsys, monkeypatch):
    def not_installed(package):
        raise PackageNotFoundError(package)

    monkeypatch.setattr(potentials, "version", not_installed)
    write(tmp_path / "water.extxyz", molecule("H2O"))
    out = tmp_path / "out.db"
    assert main(["recheck", str(tmp_path / "water.extxyz"), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "pip install tblite" in error and "\n" not in error and not out.exists()


def test_crystal_judgement_ranks_by_physical_energy(tmp_path, silicon):
    """Two tries of Si: the one of lower Ẽ is simple cubic; the physical energy picks the
    diamond one, which matches the reference."""
    diamond = silicon.copy()
    diamond.rattle(0.02, seed=1)
    wrong = Atoms("Si2", [[0, 0, 0], [0, 0, 2.5]], cell=np.eye(3) * [2.5, 2.5, 5.0], pbc=True)
    diamond.info.update(pseudo_energy_per_atom=-1.0, index=0)
    wrong.info.update(pseudo_energy_per_atom=-2.0, index=1)
    source = tmp_path / "tries.extxyz"
    write(source, [wrong, diamond])
    out = tmp_path / "checked.db"
    recheck(source, "sevennet-0", out=out, progress=False)
    by_pseudo = evaluate(out, "crystal", reference=[silicon])
    by_physical = evaluate(out, "crystal", reference=[silicon], rank_by="physical")
    assert by_pseudo.summary["match_rate_lowest"] == 0 and by_physical.summary["match_rate_lowest"] == 1
    assert by_pseudo.summary["match_rate_lowest_physical"] == 1
    group = by_pseudo.groups["Si"]
    assert group["spearman"] != group["spearman"]  # two tries: no rank correlation (NaN)
    above = [r["e_above_lowest"] for r in by_pseudo.records]
    assert above[1] >= 0 and above[0] > 0.1  # the reference (relaxed by SevenNet-0) may lie lowest
    assert by_pseudo.summary["within_0.1_eV"] == pytest.approx(0.5)
