"""Search on a real Dask cluster (a ``LocalCluster`` of two worker processes, or a scheduler and
workers started by hand): the structures of a local run, and nothing lost or doubled when a
worker, every worker or the client dies or a second client resumes; a run of 10¹² asked
structures stores from the start, with bounded memory."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import pytest

import respmatch
from respmatch.cli import main
from respmatch.cluster import MIN_IN_FLIGHT
from respmatch.errors import RespmatchError
from respmatch.store import RunInUseError, RunStore

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

FAST = {"stage0.max_steps": 20, "stage0.fmax": 1e-2}


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:
        yield client


def stored(path):
    return {kv["index"]: (atoms, kv) for atoms, kv in RunStore(path, resume=True).rows()}


def rows(path):
    """Rows in the database file, counted by SQLite itself (0 before it exists)."""
    try:
        with sqlite3.connect(path) as db:
            return db.execute("SELECT COUNT(*) FROM systems").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_for_rows(path, at_least, process=None, timeout=180):
    deadline = time.monotonic() + timeout
    while rows(path) < at_least and time.monotonic() < deadline:
        assert process is None or process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    assert rows(path) >= at_least


def exactly_once(path, n):
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM systems").fetchone()[0] == n
    assert sorted(stored(path)) == list(range(n))


def test_cluster_run_stores_what_a_local_run_stores(trained_diamond, client, tmp_path):
    common = dict(volume_per_atom=(4.0, 6.0), seed=4, batch_size=3, progress=False, options=FAST)
    summary = respmatch.generate(
        trained_diamond[1], "C4", 12, tmp_path / "cluster.db", client=client, chunk_size=3, **common
    )
    respmatch.generate(trained_diamond[0], "C4", 12, tmp_path / "local.db", **common)
    assert summary["stored"] == summary["relaxed"] == 12
    on_cluster, here = stored(tmp_path / "cluster.db"), stored(tmp_path / "local.db")
    assert sorted(on_cluster) == sorted(here) == list(range(12))
    for index, (atoms, kv) in here.items():
        other, other_kv = on_cluster[index]
        np.testing.assert_allclose(other.positions, atoms.positions, atol=1e-4)
        assert other_kv["pseudo_energy_per_atom"] == pytest.approx(kv["pseudo_energy_per_atom"], abs=1e-5)
        assert (other_kv["steps"], other_kv["converged"]) == (kv["steps"], kv["converged"])


def test_search_compositions_on_the_cluster(trained_diamond, client):
    tries = {"C4": 3, "C6": 2}
    common = dict(volume_per_atom=5.0, seed=2, batch_size=2, progress=False, options=FAST)
    on_cluster = respmatch.search.generate.search_compositions(trained_diamond[1], tries, client=client, **common)
    here = respmatch.search.generate.search_compositions(trained_diamond[1], tries, **common)
    key = lambda a: (a.info["composition"], a.info["index"])  # noqa: E731
    on_cluster, here = sorted(on_cluster, key=key), sorted(here, key=key)
    assert [key(a) for a in on_cluster] == [key(a) for a in here] == [
        ("C4", 0), ("C4", 1), ("C4", 2), ("C6", 0), ("C6", 1)
    ]
    for a, b in zip(on_cluster, here):
        assert a.info["pseudo_energy_per_atom"] == pytest.approx(b.info["pseudo_energy_per_atom"], abs=1e-5)


def generate_command(model, out, n, *extra):
    return [
        sys.executable, "-m", "respmatch.cli", "generate", "--model", str(model), "--composition", "C8",
        "--n", str(n), "--out", str(out), "--volume-per-atom", "5", "--batch-size", "4",
        "--option", "stage0.max_steps=60", "--threads", "1", "--quiet", *extra,
    ]


def resume(model, out, n, client, chunk_size=None):
    return respmatch.generate(
        model, "C8", n, out, volume_per_atom=5.0, batch_size=4, resume=True, progress=False,
        options={"stage0.max_steps": 60}, client=client, chunk_size=chunk_size,
    )


def test_a_second_client_resuming_the_run_is_refused(trained_diamond, client, tmp_path, capsys):
    out, n = tmp_path / "run.db", 100
    assert main(generate_command(trained_diamond[0], out, 4)[3:]) == 0
    first = subprocess.Popen(generate_command(trained_diamond[0], out, n, "--resume"), stderr=subprocess.PIPE)
    try:
        wait_for_rows(out, 5, first)  # it writes: it holds the run
        with pytest.raises(RunInUseError, match=f"another process is writing this run \\(pid {first.pid} "):
            resume(trained_diamond[1], out, n, client)
        capsys.readouterr()
        address = client.scheduler.address
        assert main(generate_command(trained_diamond[0], out, n, "--resume", "--scheduler", address)[3:]) == 2
        message = capsys.readouterr().err
        assert message.count("\n") == 1 and "another process is writing this run" in message
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
        first.wait()
        first.stderr.close()
    exactly_once(out, n)


def test_killed_client_resumes_without_loss_or_repeats(trained_diamond, client, tmp_path):
    """The client (joined to the running cluster with --scheduler) is killed mid-run; a resume
    relaxes exactly the structures it had not stored."""
    out, n = tmp_path / "run.db", 48
    address = client.scheduler.address
    process = subprocess.Popen(
        generate_command(trained_diamond[0], out, n, "--scheduler", address, "--chunk-size", "4"),
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_rows(out, 4, process)
        assert rows(out) < n  # still running: a real kill mid-run
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
    before = stored(out)
    assert 4 <= len(before) < n

    summary = resume(trained_diamond[0], out, n, client, chunk_size=4)
    assert summary["relaxed"] == n - len(before)
    exactly_once(out, n)
    after = stored(out)
    for index, (atoms, kv) in before.items():  # stored rows are untouched
        np.testing.assert_array_equal(after[index][0].positions, atoms.positions)


def test_killed_worker_loses_and_doubles_nothing(trained_diamond, client, tmp_path):
    """Kill a worker process while it relaxes a chunk: Dask reruns the chunk elsewhere."""
    out, n = tmp_path / "run.db", 48
    pids = client.run(os.getpid)
    killed = {}

    def kill_a_busy_worker():
        wait_for_rows(out, 4)
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            busy = [address for address, keys in client.processing().items() if keys and address in pids]
            if busy:
                killed.update(address=busy[0], rows=rows(out))
                os.kill(pids[busy[0]], signal.SIGKILL)
            time.sleep(0.01)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    summary = resume(trained_diamond[1], out, n, client, chunk_size=4)  # a new run: resume allows that
    killer.join()
    assert killed and killed["rows"] < n  # the kill happened mid-run
    assert summary["relaxed"] == summary["stored"] == n
    exactly_once(out, n)


def test_cli_workers_starts_a_local_cluster(trained_diamond, tmp_path, capsys):
    out = tmp_path / "run.db"
    command = generate_command(trained_diamond[0], out, 6, "--workers", "2", "--chunk-size", "2")[3:]
    assert main(command) == 0
    assert "6 structures" in capsys.readouterr().out
    exactly_once(out, 6)
    assert main([*command, "--resume", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "not both" in capsys.readouterr().err


def test_recheck_on_the_cluster_stores_what_a_local_recheck_stores(client, tmp_path):
    from ase.build import molecule
    from ase.io import write

    from respmatch.store import read_run

    starts = []
    for k, name in enumerate(["H2O", "CH4", "NH3", "H2O", "CH4"]):
        atoms = molecule(name)
        atoms.rattle(0.05, seed=k)
        atoms.info.update(pseudo_energy_per_atom=-0.1 * k, converged=True)
        starts.append(atoms)
    source = tmp_path / "molecules.extxyz"
    write(source, starts)
    here, there = tmp_path / "here.db", tmp_path / "there.db"
    respmatch.recheck(source, "gfn2-xtb", relax=True, out=here, progress=False)
    summary = respmatch.recheck(source, "gfn2-xtb", relax=True, out=there, client=client, chunk_size=2,
                                progress=False)
    assert summary["rechecked"] == 5
    exactly_once(there, 5)
    local, remote = read_run(here), read_run(there)
    for a, b in zip(local, remote):
        assert a.info["index"] == b.info["index"]
        assert b.info["relaxed_energy_per_atom"] == pytest.approx(a.info["relaxed_energy_per_atom"], abs=1e-8)
        assert b.info["relax_steps"] == a.info["relax_steps"]


def test_cli_recheck_workers_starts_a_local_cluster(tmp_path, capsys):
    from ase.build import molecule
    from ase.io import write

    source, out = tmp_path / "water.extxyz", tmp_path / "checked.db"
    write(source, [molecule("H2O"), molecule("NH3")])
    assert main(["recheck", str(source), "--out", str(out), "--workers", "2", "--chunk-size", "1", "--quiet"]) == 0
    assert "rechecked 2 of 2" in capsys.readouterr().out
    exactly_once(out, 2)


# --- A run outlives its workers (issue 22) ---------------------------------------------------


def test_run_outlives_all_its_workers_and_an_empty_pool(trained_diamond, tmp_path):
    """Every worker (so every holder of the shared model) is killed mid-run and fresh ones join;
    later the pool shrinks to zero for a while and comes back.  Nothing is lost or doubled."""
    out, n = tmp_path / "run.db", 48
    seen = {}
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:

        def disrupt():
            wait_for_rows(out, 4)
            first = client.run(os.getpid)
            seen["killed"] = rows(out)
            for pid in first.values():  # the nannies start fresh workers in their place
                os.kill(pid, signal.SIGKILL)
            wait_for_rows(out, seen["killed"] + 4)  # the fresh workers relax again
            seen["fresh"] = not set(client.run(os.getpid).values()) & set(first.values())
            cluster.scale(0)
            deadline = time.monotonic() + 60
            while client.scheduler_info(n_workers=0)["n_workers"] and time.monotonic() < deadline:
                time.sleep(0.05)
            seen["empty"] = client.scheduler_info(n_workers=0)["n_workers"] == 0
            time.sleep(2)
            seen["emptied"] = rows(out)
            cluster.scale(2)

        disruptor = threading.Thread(target=disrupt)
        disruptor.start()
        summary = resume(trained_diamond[1], out, n, client, chunk_size=4)  # a new run: resume allows that
        disruptor.join()
    assert seen["killed"] < n and seen["fresh"] and seen["empty"] and seen["emptied"] < n
    assert summary["relaxed"] == summary["stored"] == n
    exactly_once(out, n)


def start_session(command, log):
    """A process in its own session (its group is killed at once: a nanny and its worker)."""
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def kill_session(process):
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture
def hand_started(tmp_path):
    """A scheduler and a start_worker() as a user starts them by hand (``dask scheduler``,
    ``dask worker``), on loopback; every process is killed at the end."""
    dask = [os.path.join(os.path.dirname(sys.executable), "dask")]
    if not os.path.exists(dask[0]):
        dask = [sys.executable, "-m", "dask"]
    address_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "cluster.log", "wb")
    loopback = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    processes = [start_session([*dask, "scheduler", *loopback, "--port", "0", "--scheduler-file", str(address_file)], log)]

    def start_worker():
        processes.append(start_session([*dask, "worker", "--scheduler-file", str(address_file), "--nthreads", "1",
                                        *loopback, "--local-directory", str(tmp_path / "workers")], log))
        return processes[-1]

    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the file is written at once, but let it be complete
        address = json.loads(address_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        yield processes[0], address, start_worker
    finally:
        for process in processes:
            kill_session(process)
        log.close()


def test_hand_started_cluster_outlives_its_only_worker(trained_diamond, tmp_path, hand_started):
    """The issue's case: `dask scheduler`, one `dask worker`, the worker killed mid-run and a fresh
    one started; the client (the CLI) finishes with exit code 0 and exactly n rows."""
    _, address, start_worker = hand_started
    out, n = tmp_path / "run.db", 40
    worker = start_worker()
    client = subprocess.Popen(
        generate_command(trained_diamond[0], out, n, "--scheduler", address, "--chunk-size", "4"),
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_rows(out, 4, client)
        kill_session(worker)  # the only holder of the shared model
        assert rows(out) < n
        start_worker()
        assert client.wait(timeout=300) == 0, client.stderr.read().decode()
        assert client.stderr.read() == b""
    finally:
        client.kill()
        client.wait()
        client.stderr.close()
    exactly_once(out, n)


def test_lost_scheduler_is_one_line_and_resume_continues(trained_diamond, tmp_path, hand_started):
    scheduler, address, start_worker = hand_started
    out, n = tmp_path / "run.db", 16
    start_worker()
    client = subprocess.Popen(
        generate_command(trained_diamond[0], out, n, "--scheduler", address, "--chunk-size", "4"),
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_rows(out, 4, client)
        kill_session(scheduler)
        assert client.wait(timeout=120) == 2
        message = client.stderr.read().decode()
    finally:
        client.kill()
        client.wait()
        client.stderr.close()
    assert message.count("\n") == 1 and len(message) <= 200, message
    assert message.startswith(f"respmatch: error: Dask cluster at {address}: lost the connection to the scheduler")
    assert "--resume continues" in message
    stored_before = rows(out)
    assert 4 <= stored_before < n
    resume(trained_diamond[0], out, n, None)
    exactly_once(out, n)


@pytest.mark.parametrize("fault", ["a chunk kills its worker", "no worker joins"])
def test_a_fault_the_run_cannot_outlive_is_one_line(trained_diamond, tmp_path, fault):
    """Dask's own limits, tightened: a chunk that killed ``allowed-failures`` + 1 workers (0 + 1
    here), or no worker for ``no-workers-timeout``."""
    out = tmp_path / "run.db"
    limits = {"distributed.scheduler.allowed-failures": 0, "distributed.scheduler.no-workers-timeout": "1s"}
    workers = 1 if fault == "a chunk kills its worker" else 0
    with dask.config.set(limits), distributed.LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster) as client:

        def kill_the_busy_worker():
            deadline = time.monotonic() + 120
            while not any(client.processing().values()) and time.monotonic() < deadline:
                time.sleep(0.01)
            for pid in client.run(os.getpid).values():
                os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_the_busy_worker) if workers else None
        if killer:
            killer.start()
        with pytest.raises(RespmatchError) as error:
            resume(trained_diamond[1], out, 16, client, chunk_size=4)
        if killer:
            killer.join()
    message = str(error.value)
    assert message.startswith(f"Dask cluster at {cluster.scheduler_address}: ")
    assert message.endswith("the same command with --resume continues") and len(message) <= 200
    assert ("1 worker died running the same chunk" if workers else "no worker for 1 s") in message


# --- Memory proportional to the batch, not to n (issue 22) -----------------------------------

HUGE = 10**12
RSS_LIMIT = 1.5 * 2**30  # a torch process with a tiny model; the old index list passed it within seconds


def stores_from_the_start(command, out, at_least, then=lambda: None):
    """Run a command until the database holds ``at_least`` rows (bounded wait), checking its
    memory all along, and call ``then`` before it is killed; its largest resident size and
    what ``then`` returned."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    peak = 0
    try:
        deadline = time.monotonic() + 180
        while rows(out) < at_least and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode()
            peak = max(peak, psutil.Process(process.pid).memory_info().rss)
            assert peak < RSS_LIMIT, f"{peak / 2**20:.0f} MiB before {at_least} rows were stored"
            time.sleep(0.05)
        assert rows(out) >= at_least
        seen = then()
        peak = max(peak, psutil.Process(process.pid).memory_info().rss)
    finally:
        process.kill()
        process.wait()
        process.stderr.close()
    return peak, seen


def test_a_run_of_a_trillion_structures_stores_as_it_goes(trained_diamond, tmp_path):
    out = tmp_path / "huge.db"
    command = generate_command(trained_diamond[0], out, HUGE, "--option", "stage0.max_steps=5")
    assert stores_from_the_start(command, out, 8)[0] < RSS_LIMIT
    first = set(stored(out))
    # A resume skips the stored indices without listing the n asked ones.
    assert stores_from_the_start([*command, "--resume"], out, len(first) + 8)[0] < RSS_LIMIT
    assert first < set(stored(out))


def test_a_trillion_structures_on_dask_keep_a_few_chunks_in_flight(trained_diamond, client, tmp_path):
    out = tmp_path / "huge.db"
    command = generate_command(trained_diamond[0], out, HUGE, "--option", "stage0.max_steps=5",
                               "--scheduler", client.scheduler.address, "--chunk-size", "4")
    rss, tasks = stores_from_the_start(
        command, out, 8, then=lambda: client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))
    )
    assert rss < RSS_LIMIT
    # Two threads: MIN_IN_FLIGHT chunks, the shared model, and one chunk whose release may be on
    # its way to the scheduler (earlier tests' tasks are gone).
    assert tasks <= MIN_IN_FLIGHT + 2
