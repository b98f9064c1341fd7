"""Faults as a user meets them: every command, with bad input, a missing or unwritable folder,
a full disk, Ctrl-C and kill -9, answers with its exit code and one line, changes no input or
earlier output and leaves nothing half-written."""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.io import read, write

from respmatch.cli import main
from respmatch.files import TEMPORARY_SUFFIX

REPO = Path(__file__).resolve().parents[1]
# Tiny settings: a few epochs on a two-atom cell, a few structures of short searches.
TRAIN = [
    "--epochs", "3", "--quiet", "--model", "cutoff=3.0", "--train-option", "batch_size=4",
    "--label", "noise_levels=(0, 1, 2, 4)", "--label", "strain_scales=(-0.05, 0.0, 0.05)",
]
GENERATE = [
    "--composition", "C2", "--n", "2", "--preset", "fixed-volume", "--volume-per-atom", "5.5",
    "--option", "stage0.max_steps=5", "--quiet",
]
DEMO = ["--quiet", *(f"--option={o}" for o in ("epochs=2", "cell_sizes=(2,)", "tries_per_size=2", "max_steps=5"))]


def rattled_molecules(n: int) -> list:
    """Small molecules off their minima: what GFN1-xTB (the cheapest re-check) relaxes at once."""
    shapes = [molecule(name) for name in ("H2O", "CH4", "NH3")]
    out = []
    for k in range(n):
        atoms = shapes[k % 3].copy()
        atoms.rattle(0.1, seed=k)
        out.append(atoms)
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, trained_diamond):
    """Training data, a model and a run database, made once."""
    folder = tmp_path_factory.mktemp("prepared")
    write(folder / "diamond.extxyz", bulk("C", "diamond", a=3.567))
    write(folder / "molecules.extxyz", rattled_molecules(2))
    shutil.copy(trained_diamond[0], folder / "model.pt")
    assert main(["generate", "--model", str(folder / "model.pt"), "--out", str(folder / "run.db"), *GENERATE]) == 0
    return folder


@pytest.fixture()
def files(tmp_path, prepared):
    """A folder of the user's: training data, molecules, a model and a run database."""
    names = {"data": "diamond.extxyz", "molecules": "molecules.extxyz", "model": "model.pt", "run": "run.db"}
    for name in names.values():
        shutil.copy(prepared / name, tmp_path / name)
    return {key: tmp_path / name for key, name in names.items()} | {"folder": tmp_path}


def snapshot(folder: Path) -> dict:
    """Every file's bytes, and every folder: what a failing command must leave as it was."""
    return {p: p.read_bytes() if p.is_file() else "folder" for p in sorted(folder.rglob("*"))}


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("respmatch"), err
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def no_temporaries(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if p.name.endswith(TEMPORARY_SUFFIX)]


def commands(f: dict, out_name: str) -> dict:
    """Each command that writes a file (demo: a folder), writing to ``out_name`` in the folder."""
    out = str(f["folder"] / out_name)
    return {
        "train": ["train", str(f["data"]), "--out", out + ".pt", *TRAIN],
        "label": ["label", str(f["data"]), "--out", out + ".extxyz"],
        "generate": ["generate", "--model", str(f["model"]), "--out", out + ".db", *GENERATE],
        "recheck": ["recheck", str(f["molecules"]), "--out", out + ".db", "--potential", "gfn1-xtb", "--quiet"],
        "export": ["export", str(f["run"]), "--out", out + ".extxyz"],
        "evaluate": ["evaluate", str(f["run"]), "--kind", "carbon", "--json", out + ".json"],
        "report": ["report", str(f["run"]), "--out", out + ".html"],
        "demo": ["demo", "--out", out, *DEMO],
    }


COMMANDS = ["train", "label", "generate", "recheck", "export", "evaluate", "report", "demo"]
DATABASES = {"generate", "recheck"}  # their --out is a run database, made by the command itself


def output_of(argv: list[str]) -> Path:
    return Path(argv[argv.index("--out" if "--out" in argv else "--json") + 1])


# --- inputs and options are checked before anything is written -----------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("fault", ["missing folder", "folder as file", "read-only folder", "is a folder"])
def test_unwritable_output_is_refused_before_any_work(files, command, fault, capsys, monkeypatch):
    folder = files["folder"]
    if fault == "missing folder":
        argv = commands(files, "absent/out")[command]
    elif fault == "folder as file":
        (folder / "plain").write_text("a file, not a folder")
        argv = commands(files, "plain/out")[command]
    elif fault == "is a folder":  # demo writes a folder: a file is its wrong kind
        argv = commands(files, "out")[command]
        if command == "demo":
            output_of(argv).write_text("a file, not a folder")
        else:
            output_of(argv).mkdir()
    else:  # tests run as root, whom chmod does not stop: the folder answers as read-only
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
        argv = commands(files, "out")[command]
    before = snapshot(folder)
    assert main(argv) == 2
    one_line_error(capsys, "respmatch: error:", str(output_of(argv)))
    assert snapshot(folder) == before


@pytest.mark.parametrize(
    "command, extra, words",
    [
        ("train", ["--model", "cutoff=abc"], ["--model cutoff='abc'", "a number"]),
        ("train", ["--train-option", "batch_size=x"], ["batch_size='x'", "whole number"]),
        ("train", ["--train-option", "nope=1"], ["unknown option 'nope'"]),
        ("train", ["--label", "displacement_step"], ["KEY=VALUE"]),
        ("train", ["--epochs", "0"], ["--epochs"]),
        ("generate", ["--option", "constant-volume.fmax=abc"], ["constant-volume.fmax='abc'", "a number"]),
        ("generate", ["--device", "foo"], ["--device foo", "unknown device"]),
        ("generate", ["--composition", "8C"], ["'8C'"]),
        ("generate", ["--composition", "C8+"], ["'C8+'"]),
        ("generate", ["--option", "nope=1"], ["nope"]),
        ("generate", ["--batch-size", "0"], ["--batch-size", "got '0'", "or auto"]),
        ("recheck", ["--top", "0"], ["--top", "got '0'"]),
        ("recheck", ["--fmax", "nan"], ["--fmax", "got 'nan'", "above 0"]),
        ("recheck", ["--workers", "0"], ["workers"]),
        ("recheck", ["--threads", "0"], ["--threads", "'0'"]),
        ("report", ["--structures", "-1"], ["--structures", "got '-1'"]),
        ("demo", ["--option", "epochs=0"], ["epochs=0", "at least 1"]),
        ("demo", ["--option", "tries_per_size=x"], ["tries_per_size='x'", "whole number"]),
        ("demo", ["--option", "cell_sizes=()"], ["cell_sizes=()"]),
        ("demo", ["--option", "volume_per_atom=(5.0,)"], ["volume_per_atom=(5.0,)"]),
        ("demo", ["--option", "preset=foo"], ["preset='foo'", "fixed-volume"]),
        ("demo", ["--option", "nope=1"], ["unknown option 'nope'"]),
    ],
)
def test_bad_option_is_one_line_and_creates_nothing(files, command, extra, words, capsys):
    argv = commands(files, "out")[command] + extra
    before = snapshot(files["folder"])
    assert main(argv) == 2
    one_line_error(capsys, *words)
    assert snapshot(files["folder"]) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(files, capsys):
    before = snapshot(files["folder"])
    assert main(commands(files, "out")["generate"] + ["--device", "cuda"]) == 2
    one_line_error(capsys, "CUDA is not available", "--device cpu")
    assert snapshot(files["folder"]) == before


@pytest.mark.parametrize(
    "command, source",
    [("train", "data"), ("label", "data"), ("recheck", "molecules"), ("recheck", "run"), ("export", "run"),
     ("evaluate", "run"), ("report", "run")],
)
def test_output_that_is_the_input_is_refused(files, command, source, capsys):
    argv = commands(files, "out")[command]
    if command == "recheck":
        argv[1] = str(files[source])
    argv[argv.index(str(output_of(argv)))] = str(files["folder"] / "." / files[source].name)  # another path to it
    before = snapshot(files["folder"])
    assert main(argv) == 2
    one_line_error(capsys, "is the input")
    assert snapshot(files["folder"]) == before


@pytest.mark.parametrize("command", ["recheck", "report"])
@pytest.mark.parametrize(
    "content, words",
    [
        ("missing", ["no such"]),
        ("empty", ["empty file"]),
        ("text", ["not a run database"]),
        ("foreign SQLite", ["SQLite database, but not a run database"]),
    ],
)
def test_an_input_that_is_not_a_run_is_named_and_left_as_it_was(files, command, content, words, capsys):
    source = files["folder"] / "input.db"
    if content == "empty":
        source.write_bytes(b"")
    elif content == "text":
        source.write_text("not a database\n")
    elif content == "foreign SQLite":  # ase.db.connect would write its tables into it
        with sqlite3.connect(source) as connection:
            connection.execute("CREATE TABLE notes (text)")
        connection.close()
    argv = commands(files, "out")[command]
    argv[1] = str(source)
    if command == "recheck":
        del argv[2:4]  # a run database is rechecked in place
    before = snapshot(files["folder"])
    assert main(argv) == 2
    one_line_error(capsys, "input.db", *words)
    assert snapshot(files["folder"]) == before


def test_train_does_not_overwrite_a_file_that_is_not_a_model(files, capsys):
    notes = files["folder"] / "notes.pt"
    notes.write_text("my notes")
    assert main(["train", str(files["data"]), "--out", str(notes), *TRAIN]) == 2
    one_line_error(capsys, "not a respmatch model", "not overwriting")
    assert notes.read_text() == "my notes"


def test_generate_out_that_is_not_a_database_is_refused(files, capsys):
    text = files["folder"] / "notes.db"
    text.write_text("not a database\n" * 10)
    before = snapshot(files["folder"])
    assert main(commands(files, "notes")["generate"]) == 2
    one_line_error(capsys, "not a run database")
    assert snapshot(files["folder"]) == before


@pytest.mark.parametrize(
    "content, words",
    [
        ("text", ["a text file"]),
        ("pickle", ["pickled Python objects", "never runs code"]),
        ("empty", ["empty"]),
        ("missing", ["no such model file"]),
    ],
)
def test_a_file_that_is_not_a_model_is_named_with_the_cause(files, content, words, capsys):
    path = files["folder"] / "bad.pt"
    if content == "text":
        path.write_text("hello\n")
    elif content == "pickle":
        torch.save({"layer": torch.nn.Linear(2, 2)}, path)  # a whole module: pickled code
    elif content == "empty":
        path.write_bytes(b"")
    for argv in (["info", str(path)], ["generate", "--model", str(path), "--out", str(files["folder"] / "x.db"), *GENERATE]):
        assert main(argv) == 2
        one_line_error(capsys, "bad.pt", *words)
    assert not (files["folder"] / "x.db").exists()


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("empty.extxyz", "", ["empty.extxyz", "empty"]),
        ("unknown.xyz", "2\n\nC 0 0 0\nXx 1 1 1\n", ["unknown.xyz", "unknown element 'Xx'"]),
        ("nocell.cif", "data_x\nloop_\n_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n"
         "_atom_site_fract_y\n_atom_site_fract_z\nC1 C 0 0 0\n", ["nocell.cif", "no unit cell"]),
    ],
)
def test_evaluate_reads_through_the_readers_checks(tmp_path, name, text, words, capsys):
    path = tmp_path / name
    path.write_text(text)
    assert main(["evaluate", str(path), "--kind", "crystal"]) == 2
    one_line_error(capsys, *words)


# --- the error path itself ------------------------------------------------------------------------


def test_unexpected_errors_keep_their_traceback_and_debug_shows_every_one(files, monkeypatch, capsys):
    import respmatch.run.store

    monkeypatch.setattr(respmatch.run.store, "read_run", lambda path: 1 / 0)
    with pytest.raises(ZeroDivisionError):  # a bug, not the user's fault: the traceback stays
        main(["export", str(files["run"]), "--out", str(files["folder"] / "x.extxyz")])
    assert main(["--debug", "info", str(files["data"])]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("respmatch: error:")
    assert main(["info", str(files["data"]), "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


# --- a full or failing disk: the write fails, the earlier file stays, no temporary is left -------


def fail_writes_after(monkeypatch, calls: int, code: int = errno.ENOSPC):
    """The disk fills after ``calls`` file writes: os.fsync, which every write of ours ends with,
    and SQLite's own writes fail as a full disk does."""
    count = {"n": 0}
    real_fsync = os.fsync

    def fsync(fd):
        count["n"] += 1
        if count["n"] > calls:
            raise OSError(code, os.strerror(code), "the disk")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    from ase.db.sqlite import SQLite3Database

    def failing(real):
        def write_row(self, *args, **kwargs):
            count["n"] += 1
            if count["n"] > calls:
                raise sqlite3.OperationalError(
                    "database or disk is full" if code == errno.ENOSPC else "attempt to write a readonly database"
                )
            return real(self, *args, **kwargs)

        return write_row

    for method in ("_write", "_update"):  # a new row, and a row updated (recheck's records)
        monkeypatch.setattr(SQLite3Database, method, failing(getattr(SQLite3Database, method)))


def replace_it(argv: list[str]) -> list[str]:
    """``--force`` where the command takes it: its earlier output here is a stand-in of a few
    bytes, not a file of the kind it writes, and would be refused before the write."""
    from respmatch.cli import build_parser

    sub = build_parser(only=argv[0])._subparsers._group_actions[0].choices[argv[0]]
    return ["--force"] if any("--force" in a.option_strings for a in sub._actions) else []


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_full_or_read_only_disk_is_one_line_and_changes_nothing(files, command, code, monkeypatch, capsys):
    argv = commands(files, "out")[command]
    out = output_of(argv)
    if command == "demo":  # an earlier demo's folder: its files must survive
        out.mkdir()
        (out / "report.html").write_bytes(b"earlier output")
    elif command not in DATABASES:
        out.write_bytes(b"earlier output")  # must survive a failed write whole
        argv += replace_it(argv)
    if command == "train":
        shutil.copy(files["model"], out)
    before = snapshot(files["folder"])
    # train: after its first epoch's state; recheck: at its first record, its database made.
    fail_writes_after(monkeypatch, {"train": 1, "recheck": 3}.get(command, 0), code)
    assert main(argv) == 2
    line = one_line_error(capsys).replace(str(files["folder"]), "FOLDER")  # its name holds "disk"
    assert ("disk" if code == errno.ENOSPC else "read") in line, line
    after = snapshot(files["folder"])
    if command == "demo":
        assert after == before  # the files it made are gone, the earlier one is as it was
    for path in (files["data"], files["molecules"], files["model"], files["run"], out):
        assert after.get(path) == before.get(path), path
    no_temporaries(files["folder"])
    assert not out.with_name(out.name + ".state").exists() or command == "train"


def test_an_earlier_run_survives_a_full_disk_on_resume(files, monkeypatch, capsys):
    run = files["run"]
    argv = ["generate", "--model", str(files["model"]), "--out", str(run), *GENERATE]
    argv[argv.index("--n") + 1] = "4"
    fail_writes_after(monkeypatch, 1)  # one more structure fits
    assert main(argv + ["--resume"]) == 2
    one_line_error(capsys, "database or disk is full")
    from respmatch.store import read_run

    indices = [a.info["index"] for a in read_run(run)]
    # The structures seen to finish at one look are one transaction: stored whole or not at all.
    assert indices[:2] == [0, 1] and len(indices) in (2, 3) and set(indices[2:]) <= {2, 3}


# --- Ctrl-C and kill -9 of a running command -------------------------------------------------------


def start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "respmatch.cli", *argv, "--threads", "1"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as in a terminal, even when these tests run in a background job (which ignores it)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interrupt(process: subprocess.Popen, fault: str, resumable: bool = True) -> None:
    """Ctrl-C (one line, with the --resume hint where the command resumes, exit 130) or kill -9
    of a running command."""
    process.send_signal(signal.SIGINT if fault == "ctrl-c" else signal.SIGKILL)
    _, err = process.communicate(timeout=60)
    if fault == "ctrl-c":
        assert process.returncode == 130
        hint = "; the same command with --resume continues the run" if resumable else ""
        assert err.strip().splitlines() == [f"respmatch: interrupted{hint}"]
    else:
        assert process.returncode == -signal.SIGKILL


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``path`` exists: the command is at work (past its imports and checks)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)


def interrupted_run(argv: list[str], folder: Path, at_work: Path, fault: str, pause: float = 1.0,
                    resumable: bool = True) -> None:
    """Run a command, interrupt it at a random moment once ``at_work`` exists, and check that
    every file that was in ``folder`` before is as it was."""
    before = snapshot(folder)
    process = start(argv, folder)
    wait_for(at_work, process)
    time.sleep(random.uniform(0.1, pause))
    interrupt(process, fault, resumable)
    after = snapshot(folder)
    assert {p: after[p] for p in before} == before


LONG_TRAIN = ["--epochs", "200", "--quiet", "--model", "cutoff=3.0", "--train-option",
              "batch_size=4", "--train-option", "early_stop_patience=200", "--label",
              "noise_levels=(0, 1, 2, 4)", "--label", "strain_scales=(-0.05, 0.0, 0.05)"]


@pytest.mark.parametrize("fault", ["ctrl-c", "kill -9"])
def test_interrupted_training_keeps_the_earlier_model_and_resumes(files, fault):
    folder, model = files["folder"], files["folder"] / "new.pt"
    shutil.copy(files["model"], model)  # an earlier model at --out must survive the interruption
    argv = ["train", str(files["data"]), "--out", str(model), *LONG_TRAIN]
    interrupted_run(argv, folder, folder / "new.pt.state", fault)  # data and earlier model untouched
    if fault == "ctrl-c":
        no_temporaries(folder)
    argv[argv.index("200")] = "3"  # fewer epochs: resumed to the end at once
    assert main(argv + ["--resume"]) == 0
    no_temporaries(folder)
    assert torch.load(model, weights_only=True)["format"] == "respmatch-model"


@pytest.mark.parametrize("fault", ["ctrl-c", "kill -9"])
def test_interrupted_generate_keeps_what_it_stored_and_resumes(files, fault):
    folder, run = files["folder"], files["folder"] / "long.db"
    argv = ["generate", "--model", str(files["model"]), "--out", str(run), "--composition", "C2",
            "--n", "30", "--batch-size", "2", "--preset", "fixed-volume", "--volume-per-atom",
            "5.5", "--option", "stage0.max_steps=40", "--quiet"]
    interrupted_run(argv, folder, run, fault)
    from respmatch.store import read_run

    stored = {a.info["index"]: a.positions.tobytes() for a in read_run(run)} if run.exists() else {}
    assert main(argv + ["--resume"]) == 0
    resumed = {a.info["index"]: a.positions.tobytes() for a in read_run(run)}
    assert sorted(resumed) == list(range(30))  # nothing lost, nothing twice
    assert all(resumed[i] == stored[i] for i in stored)  # what was stored stays as it was


@pytest.mark.parametrize("fault", ["ctrl-c", "kill -9"])
def test_interrupted_recheck_keeps_what_it_stored_and_resumes(files, fault, capsys):
    folder, out, source = files["folder"], files["folder"] / "checked.db", files["folder"] / "many.extxyz"
    write(source, rattled_molecules(60))  # a few seconds of GFN1-xTB relaxations
    argv = ["recheck", str(source), "--out", str(out), "--potential", "gfn1-xtb", "--relax", "--quiet"]
    interrupted_run(argv, folder, out, fault)
    from respmatch.store import read_run

    def rechecked() -> dict:
        return {a.info["index"]: a.info["relaxed_energy_per_atom"] for a in read_run(out) if "physical_potential" in a.info}

    stored = rechecked() if out.exists() else {}
    assert len(stored) < 60  # interrupted mid-run
    assert main(argv + ["--resume"]) == 0
    assert f"rechecked {60 - len(stored)} of 60" in capsys.readouterr().out  # nothing twice
    resumed = rechecked()
    assert sorted(resumed) == list(range(60))  # nothing lost
    assert all(resumed[i] == stored[i] for i in stored)  # what was stored stays as it was


def test_interrupted_demo_leaves_nothing(files):
    folder, out = files["folder"], files["folder"] / "demo"
    before = snapshot(folder)
    argv = ["demo", "--out", str(out), *DEMO, "--option", "epochs=400"]
    interrupted_run(argv, folder, out / "diamond.pt.state", "ctrl-c", pause=0.5, resumable=False)  # training
    assert not out.exists() and snapshot(folder) == before


@pytest.mark.parametrize("command", ["label", "export", "evaluate", "report"])
def test_ctrl_c_while_writing_keeps_the_earlier_file_and_no_temporary(files, command, monkeypatch, capsys):
    argv = commands(files, "out")[command]
    output_of(argv).write_bytes(b"earlier output")
    argv += replace_it(argv)
    before = snapshot(files["folder"])

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)  # the written temporary is being flushed
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == "respmatch: interrupted"
    assert snapshot(files["folder"]) == before


# --- one mechanism: every declared output of every command, against every input ---------------------


def full_commands(f: dict, out_name: str) -> dict:
    """``commands``, with every optional output and input given (generate's ranked structures,
    evaluate's figure and reference): each one the table below must cover."""
    argv = commands(f, out_name)
    out = str(f["folder"] / out_name)
    argv["generate"] += ["--keep", "1", "--ranked-out", out + "-ranked.extxyz"]
    argv["evaluate"] += ["--plot", out + ".png", "--reference", str(f["data"])]
    return argv


def declared_files(argv: list[str]) -> tuple[list, list]:
    """(inputs, outputs) of a command line, as the command's parser declares them."""
    from respmatch.cli import build_parser

    parser = build_parser(only=argv[0])
    args = parser.parse_args(argv)
    return parser._subparsers._group_actions[0].choices[argv[0]].files(args)


def file_cases() -> list:
    """(command, output option, what the output is made): every declared output of every
    command, as the same path as each declared input, a symlink to it, as another output, and
    as an existing file of another kind."""
    fake = {"folder": Path("/f"), **{k: Path(f"/f/{k}") for k in ("data", "molecules", "model", "run")}}
    cases = []
    for command, argv in full_commands(fake, "out").items():
        inputs, outputs = declared_files(argv)
        for option, _, kind in outputs:
            cases += [(command, option, ("input", k)) for k in range(len(inputs))]
            cases += [(command, option, ("symlink", k)) for k in range(len(inputs))]
            cases += [(command, option, ("output", k)) for k in range(len(outputs)) if outputs[k][0] != option]
            cases.append((command, option, ("foreign", kind)))
    return cases


@pytest.mark.parametrize("command, option, made", file_cases())
def test_no_output_can_destroy_an_input_or_another_output(files, command, option, made, capsys):
    argv = full_commands(files, "out")[command]
    inputs, outputs = declared_files(argv)
    position = argv.index(next(str(path) for o, path, _ in outputs if o == option))
    how, which = made
    if how == "input":  # another spelling of the same path
        target = Path(inputs[which][1])
        argv[position] = str(target.parent / "." / target.name)
        words = ["is the input"]
    elif how == "symlink":
        argv[position] = str(files["folder"] / "link")
        os.symlink(inputs[which][1], argv[position])
        words = ["is the input"]
    elif how == "output":
        argv[position] = str(outputs[which][1])
        words = ["is also the file of"]
    else:  # a file of the user's that this command does not write
        path = Path(argv[position])
        path.write_text("my notes\n")
        words = [str(path), "is a file, not a folder" if which == "folder" else "not a"]
    if option == "--plot" and how != "foreign":  # refused as early: the name is no figure's
        words = ["expected a figure file"]
    before = snapshot(files["folder"])
    assert main(argv) == 2
    line = one_line_error(capsys, option, *words)
    assert len(line) <= 250
    assert snapshot(files["folder"]) == before


def test_every_option_that_names_a_file_is_declared():
    """An option added tomorrow that reads or writes a file must be declared, or this fails."""
    from respmatch.cli import COMMANDS, build_parser

    parser = build_parser()
    for name in COMMANDS:
        sub = parser._subparsers._group_actions[0].choices[name]
        declared = set(sub.inputs) | {dest for dest, _ in sub.outputs}
        for action in sub._actions:
            text = f"{action.dest} {action.help or ''}".lower()
            names_a_file = any(word in text for word in ("out", "file", ".db", ".pt", ".json", "write"))
            if names_a_file and action.dest not in {"help", "force", "debug", "quiet"}:
                assert action.dest in declared, f"{name} {action.option_strings or action.dest}"


def test_force_replaces_a_file_of_another_kind_but_never_a_database(files, capsys):
    notes = files["folder"] / "notes.extxyz"
    notes.write_text("my notes\n")
    assert main(["export", str(files["run"]), "--out", str(notes)]) == 2
    one_line_error(capsys, "not a structure file", "--force")
    assert main(["export", str(files["run"]), "--out", str(notes), "--force"]) == 0
    assert len(read(notes, index=":")) == 2
    assert main(["export", str(files["run"]), "--out", str(notes)]) == 0  # its own kind: replaced
    other = files["folder"] / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (text)")
    connection.close()
    before = other.read_bytes()
    assert main(commands(files, "other")["generate"] + ["--force"]) == 2
    one_line_error(capsys, "not a run database", "choose another file")
    assert other.read_bytes() == before


def test_a_run_killed_before_its_tables_is_an_empty_run(files):
    """kill -9 in generate's first instant can leave an SQLite file without tables."""
    empty = files["folder"] / "empty.db"
    sqlite3.connect(empty).close()
    assert main(commands(files, "empty")["generate"]) == 0
    from respmatch.store import read_run

    assert len(read_run(empty)) == 2


@pytest.mark.parametrize(
    "command, extra, words",
    [
        *[("generate", ["--volume-per-atom", v], ["--volume-per-atom", f"got {v!r}", "0 < A ≤ B"])
          for v in ("0", "-1", "5:3", "nan", "inf", "abc")],
        ("generate", ["--seed", "-1"], ["--seed", "got '-1'", "at least 0"]),
        ("generate", ["--chunk-size", "0"], ["--chunk-size", "got '0'", "at least 1"]),
        ("generate", ["--chunk-size", "-3"], ["--chunk-size", "got '-3'", "at least 1"]),
        ("generate", ["--keep", "0"], ["--keep", "got '0'"]),
        ("generate", ["--out", "postgresql://user@host/db"], ["--out", "SQLite file"]),
        ("generate", ["--ranked-out", "x.extxyz"], ["--ranked-out does nothing without --keep"]),
        ("generate", ["--max-kicks", "5"], ["--max-kicks does nothing without --valid-only"]),
        ("generate", ["--chunk-size", "4"], ["--chunk-size does nothing without --workers or --scheduler"]),
        ("generate", ["--space-groups", "prior"], ["--space-groups does nothing without --symmetry"]),
        ("recheck", ["--fmax", "0.1"], ["--fmax does nothing without --relax"]),
        ("evaluate", ["--plot", "map.xyz"], ["--plot", "got 'map.xyz'", ".png"]),
        ("report", ["--structures", "x"], ["--structures", "got 'x'"]),
        ("train", ["--model", "cutoff=0"], ["--model cutoff=0", "above 0"]),
        ("train", ["--model", "hidden=()"], ["--model hidden=()"]),
    ],
)
def test_every_option_value_is_checked_before_work(files, command, extra, words, capsys):
    argv = commands(files, "out")[command] + extra
    before = snapshot(files["folder"])
    assert main(argv) == 2
    line = one_line_error(capsys, *words)
    assert len(line) <= 200 + len("respmatch: error: ")
    assert snapshot(files["folder"]) == before


def test_train_refuses_a_cutoff_of_zero_for_molecules_too(files, capsys):
    argv = ["train", str(files["molecules"]), "--out", str(files["folder"] / "m.pt"), *TRAIN]
    argv[argv.index("cutoff=3.0")] = "cutoff=0"
    assert main(argv) == 2
    one_line_error(capsys, "--model cutoff=0")


def test_a_resume_with_other_parameters_is_one_short_line(files, capsys):
    argv = commands(files, "x")["generate"]
    argv[argv.index(str(files["folder"] / "x.db"))] = str(files["run"])
    argv[argv.index("--composition") + 1] = "C" * 400
    before = snapshot(files["folder"])
    assert main(argv + ["--resume"]) == 2
    line = one_line_error(capsys, "cannot resume")
    assert len(line) <= 200 + len("respmatch: error: ")
    assert snapshot(files["folder"]) == before


def test_library_warnings_are_quiet_unless_debug(files, monkeypatch, capsys):
    import warnings

    import respmatch.store

    def export(*args, **kwargs):
        warnings.warn("No tensor product accelerator is enabled", UserWarning)
        np.float32(1e38) * np.float32(1e38)  # numpy's overflow warning
        return 0

    monkeypatch.setattr(respmatch.store, "export", export)
    argv = ["export", str(files["run"]), "--out", str(files["folder"] / "x.extxyz")]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""
    assert main(["--debug", *argv]) == 0
    err = capsys.readouterr().err
    assert "accelerator" in err and "overflow" in err
