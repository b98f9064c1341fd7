"""Molecule evaluation: bond perception, strict and lenient validity, uniqueness and novelty."""

import json
import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from respmatch.evaluate import evaluate
from respmatch.evaluate.molecules import evaluate_molecules, judge


def tagged(atoms, index, converged=True):
    atoms = atoms.copy()
    atoms.info.update(index=index, converged=converged, pseudo_energy_per_atom=-0.1 * index)
    return atoms


def test_valid_molecules_give_their_canonical_smiles():
    for name, smiles in [("CH3CH2OH", "CCO"), ("C6H6", "c1ccccc1"), ("CH3CN", "CC#N")]:
        assert judge(molecule(name)) == {"smiles": smiles, "strict": True, "lenient": True}


def test_smiles_does_not_depend_on_atom_order_or_orientation():
    ethanol = molecule("CH3CH2OH")
    moved = ethanol[np.random.default_rng(0).permutation(len(ethanol))]
    moved.rotate(73, (1, 2, 3))
    moved.translate((4.0, -2.0, 1.0))
    assert judge(moved) == judge(ethanol)


def test_invalid_structures_are_refused_without_raising():
    stretched = molecule("C6H6")
    stretched.positions *= 1.6  # atoms too far apart to bond: no neutral bond ordering
    two = molecule("CH3CH2OH") + molecule("H2O")
    two.positions[-3:] += 10.0  # two molecules far apart: two fragments
    methyl = molecule("CH3")  # odd electron count: no neutral closed-shell bonding
    crammed = Atoms("C5NOH9", positions=np.random.default_rng(1).uniform(0, 2.5, (16, 3)))
    broken = molecule("CH3CH2OH")
    broken.positions[0] = np.nan
    empty = Atoms()
    for atoms in (stretched, two, methyl, crammed, broken, empty):
        assert not judge(atoms)["strict"] and not judge(atoms)["lenient"]
    assert judge(two)["smiles"] == "CCO.O"


def test_charge_separated_molecule_is_lenient_but_not_strict():
    assert judge(molecule("CH3NO2")) == {"smiles": "C[N+](=O)[O-]", "strict": False, "lenient": True}


def test_uniqueness_novelty_and_convergence():
    ethanol, benzene, water = molecule("CH3CH2OH"), molecule("C6H6"), molecule("H2O")
    stretched = molecule("C6H6")
    stretched.positions *= 1.6
    structures = [
        tagged(ethanol, 0),
        tagged(ethanol, 1),  # a duplicate
        tagged(benzene, 2),
        tagged(stretched, 3, converged=False),
        tagged(water, 4, converged=False),
    ]
    result = evaluate_molecules(structures, training=[ethanol])
    summary = result.summary
    assert summary["n"] == 5 and summary["converged"] == 3 / 5
    assert summary["strict_valid"] == 4 / 5 and summary["lenient_valid"] == 4 / 5
    assert summary["unique"] == 3 / 4  # CCO twice, c1ccccc1, O
    assert summary["novel"] == 2 / 3  # CCO is in the training set
    assert summary["n_converged"] == 3 and summary["strict_valid_converged"] == 1.0
    assert summary["unique_converged"] == 2 / 3 and summary["novel_converged"] == 1 / 2

    assert list(result.groups) == ["C2H6O", "C6H6", "H2O"]
    assert result.groups["C2H6O"] == {
        "n": 2, "converged": 1.0, "strict_valid": 1.0, "lenient_valid": 1.0, "unique": 0.5, "novel": 0.0,
    }
    assert result.groups["C6H6"]["strict_valid"] == 0.5 and result.groups["C6H6"]["converged"] == 0.5

    records = result.records
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4]
    assert records[3] == {
        "index": 3, "composition": "C6H6", "converged": False, "pseudo_energy_per_atom": pytest.approx(-0.3),
        "smiles": None, "strict": False, "lenient": False, "novel": False,
    }
    assert [r["novel"] for r in records] == [False, False, True, False, True]
    assert "C2H6O" in result.table() and "strict_valid_converged" in result.table()


def test_duplicates_halve_uniqueness_and_novelty_needs_training(tmp_path):
    result = evaluate([molecule("C6H6"), molecule("C6H6")], "molecule")
    assert result.summary["unique"] == 0.5
    assert math.isnan(result.summary["novel"]) and result.records[0]["novel"] is None
    assert result.records[1]["index"] == 1  # position when the structure carries no index
    result.write_json(tmp_path / "eval.json")
    assert json.loads((tmp_path / "eval.json").read_text())["summary"]["n"] == 2


def test_evaluate_cli_on_molecules_with_training_set_and_plot(tmp_path, capsys):
    from ase.build import molecule
    from ase.io import write

    from respmatch.cli import main

    generated, training = tmp_path / "generated.extxyz", tmp_path / "training.extxyz"
    write(generated, [molecule("CH3CH2OH"), molecule("C6H6")], format="extxyz")
    write(training, [molecule("C6H6")], format="extxyz")
    plot = tmp_path / "validity.png"
    assert main(["evaluate", str(generated), "--kind", "molecule", "--training", str(training),
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "molecule evaluation" in out and "strict_valid" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
