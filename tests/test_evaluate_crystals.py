import math

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from respmatch.evaluate import evaluate
from respmatch.evaluate.crystals import evaluate_crystals


def perturbed(atoms, seed, energy=None, strain=0.003, rattle=0.01):
    """A slightly strained and rattled copy, as a relaxation that landed near ``atoms`` gives
    (a rattle of 0.02 Å already lowers the symmetry spglib finds at symprec 0.1 now and then)."""
    atoms = atoms.copy()
    rng = np.random.default_rng(seed)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + strain * rng.uniform(-1, 1, (3, 3))), scale_atoms=True)
    atoms.rattle(rattle, seed=seed)
    if energy is not None:
        atoms.info["pseudo_energy_per_atom"] = energy
    return atoms


NACL = bulk("NaCl", "rocksalt", a=5.64)
SI = bulk("Si", "diamond", a=5.43)


@pytest.mark.parametrize("crystal, symbol, number", [(NACL, "Fm-3m", 225), (SI, "Fd-3m", 227)])
def test_perturbed_copy_matches_with_small_rmse_and_same_space_group(crystal, symbol, number):
    result = evaluate_crystals([perturbed(crystal, seed=1)], reference=[crystal])
    record = result.records[0]
    assert record["valid"] and record["matched"]
    assert 0 < record["rms"] < 0.05
    assert (record["spacegroup"], record["spacegroup_number"]) == (symbol, number)
    assert result.summary["match_rate_any"] == result.summary["match_rate_lowest"] == 1
    assert evaluate_crystals([perturbed(crystal, seed=2, rattle=0.02)], reference=[crystal]).records[0]["matched"]


def test_symmetry_analysis_raises_no_deprecation_warnings():
    """spglib's own error-handling DeprecationWarning is silenced at our calls; nothing else is."""
    import warnings

    from respmatch.evaluate.carbon import symmetry_key
    from respmatch.symmetry import quiet_spglib

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_crystals([perturbed(SI, seed=1)], reference=[SI])
        assert symmetry_key(SI) == (227, 2)
    with pytest.warns(UserWarning), quiet_spglib():
        warnings.warn("other warnings still show", UserWarning)


def test_supercell_of_the_reference_matches():
    result = evaluate_crystals([perturbed(NACL * (2, 2, 1), seed=2)], reference=[NACL])
    assert result.records[0]["matched"]
    assert result.records[0]["spacegroup_number"] == 225


@pytest.mark.parametrize(
    "other, reference",
    [(bulk("Si", "bcc", a=3.1), SI), (bulk("NaCl", "cesiumchloride", a=3.4), NACL)],
)
def test_other_polymorph_does_not_match(other, reference):
    result = evaluate_crystals([other], reference=[reference])
    assert result.records[0]["valid"] and not result.records[0]["matched"]
    assert result.summary["match_rate_any"] == 0
    assert math.isnan(result.summary["rmse_any"])


def test_overlapping_atoms_are_invalid_and_never_match():
    overlapping = SI.copy()
    overlapping.positions[1] = overlapping.positions[0] + [0.3, 0, 0]
    one_atom = Atoms("Si", cell=np.eye(3) * 0.4, pbc=True)  # an atom against its own image
    result = evaluate_crystals([overlapping, one_atom], reference=[SI])
    assert [r["valid"] for r in result.records] == [False, False]
    assert result.records[0]["min_distance"] == pytest.approx(0.3)
    assert not result.records[0]["matched"] and result.records[0]["spacegroup"] is None
    assert result.summary["valid"] == 0 and result.groups["Si"]["distinct"] == 0


def test_lowest_energy_valid_try_is_the_one_try_pick():
    wrong = bulk("Si", "bcc", a=3.1)
    wrong.info["pseudo_energy_per_atom"] = -1.0
    invalid = SI.copy()
    invalid.positions[1] = invalid.positions[0] + [0.1, 0, 0]
    invalid.info["pseudo_energy_per_atom"] = -9.0  # lowest Ẽ, but invalid: not picked
    tries = [perturbed(SI, 1, energy=0.5), wrong, invalid, perturbed(SI, 2, energy=0.2)]
    for k, atoms in enumerate(tries):
        atoms.info["index"] = k
    group = evaluate_crystals(tries, reference=[SI]).groups["Si"]
    assert group["lowest_index"] == 1 and group["spacegroup"] == "Im-3m (229)"
    assert group["matched_any"] and not group["matched_lowest"]
    tries[1].info["pseudo_energy_per_atom"] = 1.0
    group = evaluate_crystals(tries, reference=[SI]).groups["Si"]
    assert group["lowest_index"] == 3 and group["matched_lowest"]
    assert group["rmse_any"] <= group["rmse_lowest"]


def test_uniqueness_counts_duplicates_and_novelty_uses_training():
    tries = [perturbed(SI, 1), perturbed(SI, 2), bulk("Si", "bcc", a=3.1), perturbed(NACL, 3)]
    result = evaluate_crystals(tries, training=[SI * (2, 1, 1)])
    assert result.groups["Si"]["distinct"] == 2 and result.groups["NaCl"]["distinct"] == 1
    assert result.summary["unique"] == pytest.approx(3 / 4)
    assert [r["novel"] for r in result.records] == [False, False, True, True]
    assert "match_rate_any" not in result.summary and "matched" not in result.records[0]


def test_formula_without_reference_is_not_counted_and_table_renders(tmp_path):
    tries = [perturbed(SI, 1, energy=0.1), perturbed(NACL, 2, energy=0.3)]
    tries[0].info.update(converged=True, composition="Si2")
    result = evaluate(tries, "crystal", reference=[SI])
    assert result.summary["with_reference"] == 1 and result.summary["match_rate_any"] == 1
    assert result.records[1]["matched"] is None and "matched_any" not in result.groups["NaCl"]
    assert result.records[0]["composition"] == "Si2" and result.summary["converged"] == 1
    table = result.table()
    assert "match_rate_lowest" in table and "Fd-3m (227)" in table
    result.write_json(tmp_path / "crystals.json")


def test_evaluate_cli_matches_against_a_reference_cif(tmp_path, capsys):
    from ase.build import bulk
    from ase.io import write

    from respmatch.cli import main

    tries = [bulk("NaCl", "rocksalt", a=5.7), bulk("NaCl", "cesiumchloride", a=3.4)]
    for k, atoms in enumerate(tries):
        atoms.info.update(index=k, pseudo_energy_per_atom=float(k), converged=True)
    write(tmp_path / "tries.extxyz", tries, format="extxyz")
    write(tmp_path / "known.cif", bulk("NaCl", "rocksalt", a=5.64))
    code = main(["evaluate", str(tmp_path / "tries.extxyz"), "--kind", "crystal",
                 "--reference", str(tmp_path / "known.cif"), "--plot", str(tmp_path / "match.png"),
                 "--json", str(tmp_path / "e.json")])
    assert code == 0
    assert "crystal evaluation" in capsys.readouterr().out
    import json

    summary = json.loads((tmp_path / "e.json").read_text())["summary"]
    assert summary["match_rate_any"] == 1.0 and summary["match_rate_lowest"] == 1.0
    assert (tmp_path / "match.png").read_bytes()[:4] == b"\x89PNG"
