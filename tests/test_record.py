"""One record schema: the store writes it, export and read_run give it back, the judges agree on it."""

import numpy as np
from ase.build import bulk, molecule

from respmatch.evaluate.carbon import evaluate_carbon
from respmatch.evaluate.crystals import evaluate_crystals
from respmatch.evaluate.molecules import evaluate_molecules
from respmatch.record import RECORD_KEYS, Record
from respmatch.store import RunStore, read_run


def test_record_keys_and_plain_values():
    record = Record(np.int64(3), np.int32(7), np.float32(-0.25), np.bool_(True), np.int64(12), "relax")
    assert RECORD_KEYS == ("index", "seed", "pseudo_energy_per_atom", "converged", "steps", "stage")
    assert [type(v) for v in record.as_dict().values()] == [int, int, float, bool, int, str]
    assert Record.from_info({**record.as_dict(), "composition": "C8"}) == record


def test_store_round_trip_is_the_record(tmp_path):
    record = Record(0, 7, -0.5, False, 40, "full-cell")
    with RunStore(tmp_path / "run.db", {"composition": "C2", "n": 1}) as store:
        store.write(bulk("C", "diamond"), record)
    (atoms,) = read_run(tmp_path / "run.db")
    assert Record.from_info(atoms.info) == record


def test_judges_agree_on_a_structure_without_a_record():
    """A structure from a plain file counts as converged for every judge, indexed by position."""
    carbon = evaluate_carbon([bulk("C", "diamond")])
    crystal = evaluate_crystals([bulk("Si", "diamond")])
    molecules = evaluate_molecules([molecule("CH4")])
    for result in (carbon, crystal, molecules):
        assert result.records[0]["converged"] is True and result.records[0]["index"] == 0
        assert result.records[0]["pseudo_energy_per_atom"] is None
    assert carbon.summary["converged"] == crystal.summary["converged"] == molecules.summary["converged"] == 1
