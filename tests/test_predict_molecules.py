"""``respmatch predict`` with a molecule model: valid molecules → GFN2-xTB → isomers and conformers.

The grouping is checked on molecules built in code and relaxed with GFN2-xTB itself (ethanol's
trans and gauche conformers, dimethyl ether); the funnel end to end on a tiny model trained on one
water molecule (a 5 Å cutoff, so that every start in the molecule box feels every atom), whose
valid-only search finds water in a few tries.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from rdkit import Chem
from rdkit.Chem import AllChem, rdMolTransforms

import respmatch
from respmatch.chem import judge
from respmatch.cli import main
from respmatch.errors import RespmatchError
from respmatch.predict import molecules
from respmatch.predict.isomers import rank_isomers
from respmatch.predict.molecule_files import write_isomers
from respmatch.predict.molecule_funnel import Relaxation, SearchCounts
from respmatch.predict.molecule_settings import MoleculeSettings
from respmatch.recheck.check import RecheckSettings, relax_structures
from respmatch.recheck.potentials import ase_calculator
from respmatch.run import open_run
from respmatch.train import TrainConfig

XTB = RecheckSettings("gfn2-xtb", relax=True, fmax=0.01, max_steps=500)


def built(smiles: str, dihedral=None) -> Atoms:
    """An RDKit-embedded geometry, one dihedral set (atom indices, degrees) if given."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    if dihedral is not None:
        rdMolTransforms.SetDihedralDeg(mol.GetConformer(), *dihedral)
    return Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], mol.GetConformer().GetPositions())


def test_conformers_of_one_isomer_group_together_and_isomers_rank_by_xtb_energy(tmp_path):
    trans = built("CCO", (0, 1, 2, 8, 180.0))  # the OH hydrogen (atom 8) anti to the methyl
    gauche = built("CCO", (0, 1, 2, 8, 60.0))
    # trans again: turned, two methyl hydrogens swapped, shaken: another try in the same minimum
    again = trans[[0, 1, 2, 4, 3, 5, 6, 7, 8]]
    again.rotate(70, "z")
    again.rotate(30, "x")
    again.positions += np.random.default_rng(0).uniform(-0.05, 0.05, again.positions.shape)
    ether = built("COC")
    relaxed = []
    for key, ((atoms, energy, _, converged), error) in zip("tgae", relax_structures([trans, gauche, again, ether], XTB)):
        assert error is None and converged
        relaxed.append({"key": key, "smiles": judge(atoms)["smiles"], "energy": energy, "atoms": atoms})
    # dimethyl ether found by more tries than ethanol: the ranking must still follow the energy
    relaxed += [{**relaxed[3], "key": f"e{k}"} for k in range(4)]

    isomers = rank_isomers(relaxed, threshold=0.125)

    assert [i["smiles"] for i in isomers] == ["CCO", "COC"]  # GFN2-xTB puts ethanol below its isomer
    ethanol, ether = isomers
    assert ethanol["energy"] < ether["energy"] and ether["above_lowest"] == pytest.approx(ether["energy"] - ethanol["energy"])
    assert ethanol["found"] == 3 and ether["found"] == 5
    # trans and its turned, permuted twin are one conformer; gauche is another (only H moves)
    assert len(ethanol["conformers"]) == 2 and sorted(c["found"] for c in ethanol["conformers"]) == [1, 2]
    assert {c["best"] for c in ethanol["conformers"]} in ({"g", "t"}, {"g", "a"})
    assert ethanol["conformers"][0]["energy"] == ethanol["energy"] <= ethanol["conformers"][1]["energy"]
    assert len(ether["conformers"]) == 1
    # a threshold wider than the trans/gauche RMSD merges them: the RMSD decides, not the energy
    assert len(rank_isomers(relaxed, threshold=2.0)[0]["conformers"]) == 1

    # One SDF per isomer, its conformers lowest first, bonds as the judge perceived them.
    geometry = {m["key"]: m["atoms"] for m in relaxed}
    write_isomers(tmp_path, "sdf", {"C2H6O": isomers}, geometry.__getitem__)
    conformers = list(Chem.SDMolSupplier(str(tmp_path / "C2H6O" / "1.sdf"), removeHs=False))
    assert [Chem.MolToSmiles(Chem.RemoveHs(m)) for m in conformers] == ["CCO", "CCO"]
    assert [m.GetDoubleProp("GFN2-xTB energy (eV)") for m in conformers] == pytest.approx([c["energy"] for c in ethanol["conformers"]])
    (ether_file,) = Chem.SDMolSupplier(str(tmp_path / "C2H6O" / "2.sdf"))
    assert Chem.MolToSmiles(ether_file) == "COC" and ether_file.GetDoubleProp("E above lowest isomer (eV)") > 0


@pytest.fixture(scope="module")
def water_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "water.pt"
    respmatch.train(
        [Atoms("OH2", positions=[[0, 0, 0], [0.957, 0, 0], [-0.24, 0.927, 0]])], path, preset="molecule",
        progress=False, config=TrainConfig(epochs=30, batch_size=4, seed=0, early_stop_patience=30),
        model_options={"cutoff": 5.0, "l_max": 1, "nu_max": 2, "hidden": (8,), "n_radial": 4},
    )
    return path


def predict(model, out, n=2, **options):
    return respmatch.predict("H2O", model, out, settings=MoleculeSettings(n=n), batch_size=4, progress=False, **options)


def test_water_funnel_writes_table_sdf_xyz_and_report(water_model, tmp_path):
    result = predict(water_model, tmp_path / "run.db", n=3, sdf_dir=tmp_path / "sdf", xyz_dir=tmp_path / "xyz",
                     report=tmp_path / "r.html")
    (isomer,) = result["rankings"]["H2O"]
    assert isomer["smiles"] == "O" and isomer["found"] == 3 and isomer["above_lowest"] == 0
    assert len(isomer["conformers"]) == 1  # three tries, one minimum
    counts = result["funnel"]["H2O"]
    assert counts["valid"] == counts["relaxed"] == counts["still valid"] == 3 and counts["tries"] >= 3
    assert counts["isomers"] == counts["conformers"] == 1
    assert "H2O: " in result["table"] and "\n   1  O " in result["table"]
    (mol,) = Chem.SDMolSupplier(str(tmp_path / "sdf" / "H2O" / "1.sdf"), removeHs=False)
    assert Chem.MolToSmiles(Chem.RemoveHs(mol)) == "O"
    # The stored energy is GFN2-xTB's at the written geometry, which is a relaxed one.
    water = Atoms([a.GetAtomicNum() for a in mol.GetAtoms()], mol.GetConformer().GetPositions())
    water.calc = ase_calculator("gfn2-xtb")
    assert water.get_potential_energy() == pytest.approx(isomer["energy"], abs=1e-4)
    assert mol.GetDoubleProp("GFN2-xTB energy (eV)") == pytest.approx(isomer["energy"])
    assert np.abs(water.get_forces()).max() < 0.02
    (frame,) = respmatch.read_structures(tmp_path / "xyz" / "H2O" / "1.xyz")
    assert frame.get_chemical_formula() == "H2O"
    html = (tmp_path / "r.html").read_text()
    assert "H2O: final ranking" in html and "still valid" in html
    run = open_run(tmp_path / "run.db")
    assert len(run.entries) == 3 and all(judge(a)["strict"] for a in run.structures())
    assert run.stages.finished("relax") and len(run.stages.records("relax", Relaxation)) == 3


def test_resume_repeats_no_stored_work_and_a_larger_n_searches_on(water_model, tmp_path, monkeypatch):
    out = tmp_path / "run.db"
    first = predict(water_model, out)

    def forbidden(*args, **kwargs):
        raise AssertionError("stored work was repeated")

    with monkeypatch.context() as patch:
        patch.setattr(molecules, "valid_molecules", forbidden)
        patch.setattr(molecules, "relax_structures", forbidden)
        patch.setattr(molecules, "rank_isomers", forbidden)
        again = predict(water_model, out, resume=True)
    assert again["rankings"] == first["rankings"] and again["table"] == first["table"]

    relaxed = []
    real = molecules.relax_structures
    monkeypatch.setattr(molecules, "relax_structures", lambda items, settings: relaxed.append(1) or real(items, settings))
    grown = predict(water_model, out, n=3, resume=True)
    assert len(relaxed) == 1  # only the third molecule
    assert grown["rankings"]["H2O"][0]["found"] == 3 and grown["funnel"]["H2O"]["valid"] == 3
    assert open_run(out).stages.records("search", SearchCounts)["H2O"].valid == 3


def test_a_run_killed_during_relaxation_relaxes_only_what_is_missing(water_model, tmp_path, monkeypatch):
    out = tmp_path / "run.db"
    real, calls = molecules.relax_structures, []

    def dies_on_the_second(items, settings):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(items, settings)

    monkeypatch.setattr(molecules, "relax_structures", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        predict(water_model, out, n=3)
    assert len(open_run(out).stages.records("relax", Relaxation)) == 1
    calls.clear()
    monkeypatch.setattr(molecules, "relax_structures", lambda items, settings: calls.append(1) or real(items, settings))
    result = predict(water_model, out, n=3, resume=True)
    assert len(calls) == 2 and result["rankings"]["H2O"][0]["found"] == 3


@pytest.mark.parametrize("formula, options, message", [
    ("HO", [], "HO: 9 electrons, an odd number"),
    ("H2S", [], "not trained on element"),
    ("H2O", ["--keep", "3"], "--keep is for crystals; this model predicts molecules"),
    ("H2O", ["--cif-dir", "cifs"], "--cif-dir is for crystals"),
    ("H2O", ["--workers", "2"], "--workers is for crystals"),
    ("H2O", ["--potential", "sevennet-0"], "sevennet-0 is for crystals"),
])
def test_bad_input_is_one_line_before_any_work(formula, options, message, water_model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["predict", formula, "--model", str(water_model), "--out", "run.db", "--quiet", *options]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run.db").exists() and not (tmp_path / "cifs").exists()


def test_a_crystal_model_refuses_molecule_settings(trained_diamond, tmp_path, capsys):
    path, _ = trained_diamond
    with pytest.raises(RespmatchError, match="--sdf-dir is for molecules"):
        respmatch.predict("C2", path, tmp_path / "run.db", sdf_dir=tmp_path / "sdf")
    with pytest.raises(RespmatchError, match="give PredictSettings, not MoleculeSettings"):
        respmatch.predict("C2", path, tmp_path / "run.db", settings=MoleculeSettings())
    assert main(["predict", "C2", "--model", str(path), "--out", str(tmp_path / "run.db"), "--n", "5"]) == 2
    assert "--n is for molecules; this model predicts crystals" in capsys.readouterr().err
    assert not (tmp_path / "run.db").exists()


def test_cli_prints_the_ranked_isomers(water_model, tmp_path, capsys):
    assert main(["predict", "H2O", "--model", str(water_model), "--out", str(tmp_path / "run.db"), "--n", "2",
                 "--batch-size", "4", "--sdf-dir", str(tmp_path / "sdf"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "H2O: " in printed and "2 valid" in printed and "SDFs in" in printed
    assert (tmp_path / "sdf" / "H2O" / "1.sdf").is_file()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: the tiny model gains nothing from two, and on a busy machine loses much."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
