"""Results store: rows round-trip, resume rules, export, and survival of a killed writer."""

import hashlib
import sqlite3
import subprocess
import sys
from dataclasses import dataclass

import ase.db
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.io import read

from respmatch.cli import main
from respmatch.errors import RespmatchError
from respmatch.recheck import recheck
from respmatch.record import Record
from respmatch.reporting import report
from respmatch.run import RunInUseError, WriterLock, open_run, read_run
from respmatch.store import RESUME_MAY_CHANGE, RunStore, export

PARAMS = {
    "composition": "C8",
    "preset": "crystal",
    "seed": 7,
    "n": 10,
    "model_sha256": "ab" * 32,
    "volume_per_atom": (5.5, 7.5),
    "stages": {"relax": {"fmax": 0.05, "steps": 200}},
    "batch_size": 4,
    "device": "cpu",
}


def crystal(i):
    """A distinct small crystal per index (rattled diamond) so round-trips are not trivial."""
    atoms = bulk("C", "diamond", a=3.5 + 0.01 * i)
    atoms.rattle(0.05, seed=i)
    return atoms


def record(index, converged=True):
    return Record(index, 1000 + index, -0.5 * index, converged, 10 * index, "relax")


def put(store, index, atoms=None, converged=True, **extra):
    return store.write(crystal(index) if atoms is None else atoms, record(index, converged), extra or None)


def test_rows_types_and_metadata_round_trip(tmp_path):
    path = tmp_path / "RUN.db"
    store = RunStore(path, PARAMS)
    for i in (5, 0, 2):  # written out of order, numpy types as a batched run produces them
        store.write(
            crystal(i),
            Record(
                index=np.int64(i),
                seed=np.int64(1000 + i),
                pseudo_energy_per_atom=np.float32(-0.5 * i),
                converged=np.bool_(i != 2),
                steps=np.int32(10 * i),
                stage="relax",
            ),
            extra={"max_force": np.float64(0.01 * i)},
        )
    assert len(store) == 3
    store.close()  # one writer at a time

    again = RunStore(path, PARAMS, resume=True)
    assert again.done_indices() == {0, 2, 5}
    assert len(again) == 3
    assert again.run_id == store.run_id
    rows = list(again.rows())
    assert [kv["index"] for _, kv in rows] == [0, 2, 5]
    for atoms, kv in rows:
        i = kv["index"]
        assert kv == {
            "index": i,
            "seed": 1000 + i,
            "pseudo_energy_per_atom": pytest.approx(-0.5 * i),
            "converged": i != 2,
            "steps": 10 * i,
            "stage": "relax",
            "run": store.run_id,
            "max_force": pytest.approx(0.01 * i),
        }
        for key in ("index", "seed", "steps"):
            assert type(kv[key]) is int
        assert type(kv["pseudo_energy_per_atom"]) is float
        assert type(kv["converged"]) is bool
        ref = crystal(i)
        np.testing.assert_allclose(atoms.positions, ref.positions)
        np.testing.assert_allclose(atoms.cell[:], ref.cell[:])
        assert list(atoms.numbers) == list(ref.numbers)

    expected = dict(PARAMS, volume_per_atom=[5.5, 7.5])
    assert again.metadata == expected
    assert ase.db.connect(str(path)).metadata == expected


def test_reopen_without_resume_is_refused(tmp_path):
    path = tmp_path / "RUN.db"
    store = RunStore(path, PARAMS)
    put(store, 0)
    put(store, 1)
    with pytest.raises(FileExistsError, match="already holds a run of 2 structures; use --resume"):
        RunStore(path, PARAMS)

    empty = tmp_path / "EMPTY.db"
    RunStore(empty, PARAMS)  # metadata only: still a run
    with pytest.raises(FileExistsError, match="0 structures"):
        RunStore(empty, PARAMS)


@pytest.mark.parametrize(
    "key, value",
    [
        ("composition", "Si8"),
        ("seed", 8),
        ("model_sha256", "cd" * 32),
        ("volume_per_atom", (5.5, 8)),
    ],
)
def test_resume_with_a_different_run_is_refused(tmp_path, key, value):
    path = tmp_path / "RUN.db"
    put(RunStore(path, PARAMS), 0)
    with pytest.raises(ValueError, match=key) as err:
        RunStore(path, dict(PARAMS, **{key: value}), resume=True)
    assert repr(PARAMS[key] if key != "volume_per_atom" else [5.5, 7.5]) in str(err.value)
    assert repr(value if key != "volume_per_atom" else [5.5, 8]) in str(err.value)
    assert RunStore(path, PARAMS, resume=True).metadata["n"] == PARAMS["n"]  # nothing changed


def test_resume_may_change_batch_size_device_and_grow_n(tmp_path):
    assert RESUME_MAY_CHANGE == {"batch_size", "device", "threads", "n", "model"}
    path = tmp_path / "RUN.db"
    first = RunStore(path, PARAMS)
    put(first, 0)
    first.close()
    grown = dict(PARAMS, batch_size=64, device="cuda", threads=2, n=25)
    store = RunStore(path, grown, resume=True)
    assert store.run_id == first.run_id
    assert store.metadata["n"] == 25
    put(store, 1)
    assert {kv["run"] for _, kv in store.rows()} == {first.run_id}
    assert RunStore(path, resume=True).metadata == dict(grown, volume_per_atom=[5.5, 7.5])
    with pytest.raises(ValueError, match="n=5.*n=25"):
        RunStore(path, dict(grown, n=5), resume=True)


def test_a_record_that_arrives_twice_is_written_once(tmp_path):
    path = tmp_path / "RUN.db"
    store = RunStore(path, PARAMS)
    assert put(store, 3)
    assert not put(store, 3)
    items = [(crystal(i), record(i), None) for i in (4, 3, 4, 5)]
    assert [r.index for r in store.write_many(items)] == [4, 5]
    store.close()
    assert not put(RunStore(path, PARAMS, resume=True), 3)
    assert ase.db.connect(str(path)).count() == 3


def test_the_database_refuses_a_second_row_for_an_index(tmp_path):
    """Even a writer that bypasses the store cannot add a row for a stored index."""
    path = tmp_path / "RUN.db"
    with RunStore(path, PARAMS) as store:
        put(store, 1)
    with pytest.raises(sqlite3.IntegrityError):
        ase.db.connect(str(path)).write(crystal(1), key_value_pairs={"index": 1})
    assert ase.db.connect(str(path)).count() == 1


def test_one_writer_per_run(tmp_path):
    path = tmp_path / "RUN.db"
    writer = RunStore(path, PARAMS)
    with pytest.raises(FileExistsError, match=r"another process is writing this run \(pid \d+ on "):
        RunStore(path, PARAMS, resume=True)
    reader = RunStore(path, resume=True)  # reading is always allowed, writing is not
    with pytest.raises(ValueError, match="not the run's writer"):
        put(reader, 0)
    writer.close()
    with pytest.raises(ValueError, match="not the run's writer"):
        put(writer, 0)
    with RunStore(path, PARAMS, resume=True) as store:
        assert put(store, 0)
    assert put(RunStore(path, PARAMS, resume=True), 1)  # the lock went with the store


def test_export_extxyz(tmp_path):
    path = tmp_path / "RUN.db"
    store = RunStore(path, PARAMS)
    for i in (4, 1, 0, 3):
        put(store, i, converged=i != 3)
    put(store, 2, atoms=molecule("H2O"), converged=True)

    out = tmp_path / "all.xyz"
    assert export(path, out) == 5
    images = read(out, ":")
    assert [a.info["index"] for a in images] == [0, 1, 2, 3, 4]
    for atoms in images:
        i = atoms.info["index"]
        assert atoms.info["seed"] == 1000 + i
        assert atoms.info["pseudo_energy_per_atom"] == pytest.approx(-0.5 * i)
        assert atoms.info["converged"] == (i != 3)
        assert atoms.info["steps"] == 10 * i
        assert atoms.info["stage"] == "relax"
        ref = molecule("H2O") if i == 2 else crystal(i)
        np.testing.assert_allclose(atoms.positions, ref.positions, atol=1e-6)
        np.testing.assert_allclose(atoms.cell[:], ref.cell[:], atol=1e-6)
        assert list(atoms.pbc) == list(ref.pbc)

    assert export(path, tmp_path / "ok.extxyz", only_converged=True) == 4
    assert [a.info["index"] for a in read(tmp_path / "ok.extxyz", ":")] == [0, 1, 2, 4]


def test_export_cif_and_refusals(tmp_path):
    path = tmp_path / "RUN.db"
    store = RunStore(path, PARAMS)
    for i in (2, 0, 1):
        put(store, i)

    assert export(path, tmp_path / "x.cif") == 3
    images = read(tmp_path / "x.cif", ":")
    assert len(images) == 3
    for atoms, i in zip(images, (0, 1, 2)):
        assert atoms.get_volume() == pytest.approx(crystal(i).get_volume())
        assert len(atoms) == 2

    put(store, 3, atoms=molecule("H2O"))
    with pytest.raises(ValueError, match="structure 3 is not periodic"):
        export(path, tmp_path / "bad.cif")
    assert not (tmp_path / "bad.cif").exists()
    with pytest.raises(ValueError, match=r"\.cif, \.extxyz, \.xyz"):
        export(path, tmp_path / "x.pdb")
    with pytest.raises(FileNotFoundError, match="nowhere.db"):
        export(tmp_path / "nowhere.db", tmp_path / "x.xyz")
    assert not (tmp_path / "nowhere.db").exists()


def test_urls_pass_through_and_plain_paths_are_sqlite(tmp_path, monkeypatch):
    calls = []
    real_connect = ase.db.connect

    def fake_connect(name, **kwargs):
        calls.append((name, kwargs))
        return real_connect(str(tmp_path / "server.db"))

    monkeypatch.setattr(ase.db, "connect", fake_connect)
    url = "postgresql://user:pw@host:5432/runs"
    put(RunStore(url, PARAMS), 0)
    assert export(url, tmp_path / "u.xyz") == 1
    assert calls == [(url, {}), (url, {})]

    monkeypatch.setattr(ase.db, "connect", real_connect)
    put(RunStore(tmp_path / "RUN", PARAMS), 0)  # no suffix: still an SQLite file
    count = sqlite3.connect(tmp_path / "RUN").execute("SELECT COUNT(*) FROM systems").fetchone()
    assert count == (1,)


def test_killed_writer_loses_nothing_committed(tmp_path):
    path = tmp_path / "RUN.db"
    script = f"""
from respmatch.record import Record
from respmatch.store import RunStore
from ase.build import bulk
store = RunStore({str(path)!r}, {PARAMS!r})
for i in range(100000):
    store.write(bulk("C", "diamond"), Record(i, i, -1.0, True, i, "relax"))
    if i == 2:
        print("3 written", flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "3 written\n"
    finally:
        proc.kill()  # SIGKILL while it keeps writing: no clean-up of any kind runs
        proc.wait(timeout=30)
        proc.stdout.close()

    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = RunStore(path, PARAMS, resume=True)  # the killed writer's lock is stale: taken over
    done = store.done_indices()
    assert done >= {0, 1, 2}
    assert done == set(range(len(done)))  # committed in order, nothing half-written
    for atoms, kv in store.rows():
        assert len(atoms) == 2 and kv["steps"] == kv["index"]
    put(store, len(done))  # the resumed run carries on
    store.close()
    assert len(RunStore(path, PARAMS, resume=True)) == len(done) + 1


def test_stale_lock_file_does_not_block(tmp_path):
    path = tmp_path / "RUN.db"
    put(RunStore(path, PARAMS), 0)
    (tmp_path / "RUN.db.lock").write_text("")  # what ase.db's lock leaves when a writer is killed
    store = RunStore(path, dict(PARAMS, n=20), resume=True)
    put(store, 1)
    assert store.done_indices() == {0, 1}


# --- opening for writing goes through the run reader's checks; refusals change no byte ------------


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def foreign_sqlite(path):
    """Another program's SQLite database."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (text)")
        connection.execute("INSERT INTO notes VALUES ('mine')")
    connection.close()


@pytest.mark.parametrize("resume", [False, True])
def test_another_programs_database_is_refused_for_writing_and_left_as_it_was(tmp_path, resume):
    path = tmp_path / "other.db"
    foreign_sqlite(path)
    before = digest(path)
    with pytest.raises(RespmatchError, match="other.db: an SQLite database, but not a run database"):
        RunStore(path, PARAMS, resume=resume)
    assert digest(path) == before

    structures = tmp_path / "structures.db"  # an ASE database of the user's own structures
    with ase.db.connect(structures) as db:
        db.write(bulk("Si"), note="mine")
    before = digest(structures)
    with pytest.raises(RespmatchError, match="structures.db: not a respmatch run"):
        RunStore(structures, PARAMS, resume=True)
    assert digest(structures) == before


@pytest.mark.parametrize("resume", [False, True])
def test_generate_refuses_another_programs_database(tmp_path, trained_diamond, resume, capsys):
    path = tmp_path / "other.db"
    foreign_sqlite(path)
    before = digest(path)
    argv = ["generate", "--model", str(trained_diamond[0]), "--out", str(path), "--composition", "C2", "--n", "1",
            "--preset", "fixed-volume", "--volume-per-atom", "5.5", "--quiet"]
    assert main(argv + ["--resume"] * resume) == 2
    error = capsys.readouterr().err.strip()
    assert "other.db" in error and "not a run database" in error and "\n" not in error
    assert digest(path) == before
    assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall() == [("notes",)]


@pytest.mark.parametrize("left", ["an empty file", "SQLite without tables"])
def test_what_a_run_killed_in_its_first_instant_leaves_is_an_empty_run(tmp_path, left):
    path = tmp_path / "RUN.db"
    if left == "an empty file":  # sqlite3 had made the file, nothing more
        path.write_bytes(b"")
    else:  # the header written, no table yet
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA user_version = 1")
        connection.close()
        assert open_run(path).entries == []
        with pytest.raises(RespmatchError, match="RUN.db: the run holds no structures yet"):
            report(path, tmp_path / "r.html")
    store = RunStore(path, PARAMS)  # a new run, no --resume needed
    put(store, 0)
    store.close()
    assert [a.info["index"] for a in read_run(path)] == [0]


def test_the_writer_lock_is_public_and_one_at_a_time(tmp_path):
    path = tmp_path / "RUN.db"
    RunStore(path, PARAMS).close()
    with WriterLock(path) as lock:
        assert lock.held
        with pytest.raises(RunInUseError, match="another process is writing this run"):
            RunStore(path, PARAMS, resume=True)
    assert not lock.held
    RunStore(path, PARAMS, resume=True).close()


def molecule_run(path, parameters=None):
    parameters = parameters or {"composition": "mixed", "preset": "molecule", "seed": 3, "n": 3}
    with RunStore(path, parameters) as store:
        for index, name in enumerate(("H2O", "CH4", "NH3")):
            atoms = molecule(name)
            atoms.rattle(0.05, seed=index)
            store.write(atoms, Record(index, 3, -0.1 * index, True, 10, "relax"))
    return parameters


def test_recheck_out_carries_the_run_parameters_records_and_times(tmp_path):
    source, out = tmp_path / "run.db", tmp_path / "checked.db"
    parameters = molecule_run(source)
    recheck(source, "gfn1-xtb", out=out, progress=False)
    run, checked = open_run(source), open_run(out)
    assert checked.parameters == parameters
    assert [e.record for e in checked.entries] == [e.record for e in run.entries]
    assert [e.ctime for e in checked.entries] == [e.ctime for e in run.entries]
    assert checked.seconds == pytest.approx(run.seconds)
    assert all(e.recheck.physical_potential == "gfn1-xtb" and e.recheck.physical_energy < 0 for e in checked.entries)
    assert all(e.recheck is None for e in open_run(source).entries)  # the source is not touched


def test_a_refused_recheck_leaves_the_database_byte_identical(tmp_path, capsys):
    path, out = tmp_path / "run.db", tmp_path / "checked.db"
    molecule_run(path)
    recheck(path, "gfn1-xtb", progress=False)
    recheck(path, "gfn1-xtb", out=out, progress=False)
    before = {p: digest(p) for p in (path, out)}
    assert main(["recheck", str(path), "--potential", "gfn1-xtb", "--quiet"]) == 2  # no --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["recheck", str(path), "--potential", "gfn1-xtb", "--relax", "--fmax", "0.1", "--resume", "--quiet"]) == 2
    assert "rechecked with" in capsys.readouterr().err
    assert main(["recheck", str(path), "--potential", "gfn1-xtb", "--out", str(out), "--quiet"]) == 2
    assert "already holds" in capsys.readouterr().err
    assert {p: digest(p) for p in (path, out)} == before


@dataclass
class Group:
    formula: str
    members: list
    energy: float


@dataclass
class Other:
    formula: str


def test_stage_records_are_typed_resumable_and_kept_to_their_settings(tmp_path):
    path = tmp_path / "RUN.db"
    store = RunStore(path, PARAMS)
    put(store, 0)
    store.begin_stage("distinct", {"energy_window": 0.02})
    store.write_stage("distinct", {"C8/0": Group("C8", [0], -0.5)})
    store.close()  # killed here: the stage is begun, one record stored
    run = open_run(path)
    assert run.stages.records("distinct", Group) == {"C8/0": Group("C8", [0], -0.5)}
    assert run.stages.settings("distinct") == {"energy_window": 0.02} and not run.stages.finished("distinct")

    resumed = RunStore(path, PARAMS, resume=True)
    with pytest.raises(RespmatchError, match="stage 'distinct' was run with other settings"):
        resumed.begin_stage("distinct", {"energy_window": 0.05})
    resumed.begin_stage("distinct", {"energy_window": 0.02})
    resumed.write_stage("distinct", {"C8/1": Group("C8", [1, 2], np.float64(-0.25))})
    resumed.finish_stage("distinct")
    resumed.close()
    with pytest.raises(ValueError, match="not the run's writer"):
        RunStore(path, resume=True).write_stage("distinct", {"C8/2": Group("C8", [], 0.0)})

    stages = open_run(path).stages
    assert stages.names() == ["distinct"] and stages.finished("distinct")
    assert list(stages.records("distinct", Group).values()) == [Group("C8", [0], -0.5), Group("C8", [1, 2], -0.25)]
    assert stages.records("physics", Group) == {}
    with pytest.raises(RespmatchError, match="not a Other"):
        stages.records("distinct", Other)


def test_a_writer_begins_its_stages_and_a_resume_under_other_stage_settings_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "RUN.db"
    with RunStore(path, PARAMS, stages={"distinct": {"energy_window": 0.02}, "final": {}}) as store:
        put(store, 0)
    stages = open_run(path).stages
    assert stages.names() == ["distinct", "final"] and stages.settings("distinct") == {"energy_window": 0.02}
    before = digest(path)
    with pytest.raises(RespmatchError, match=r"stage 'distinct' was run with other settings \(energy_window\)"):
        RunStore(path, PARAMS, resume=True, stages={"distinct": {"energy_window": 0.05}})
    assert digest(path) == before
    with pytest.raises(RespmatchError, match="cannot resume"):  # the run's parameters are checked first
        RunStore(path, {**PARAMS, "seed": 99}, resume=True, stages={"distinct": {"energy_window": 0.05}})
    with RunStore(path, PARAMS, resume=True, stages={"distinct": {"energy_window": 0.02}, "screen": {"steps": 5}}):
        pass
    assert open_run(path).stages.names() == ["distinct", "final", "screen"]
