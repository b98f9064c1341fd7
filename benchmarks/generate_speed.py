"""Generation speed: serial ASE FIRE, one structure at a time, against respmatch's batched FIRE.

Same model, same random starts (fixed-volume 8-atom carbon cells, the one-shot diamond protocol:
constant-volume FIRE with FrechetCellFilter, max step 0.01 Å, fmax 5e-4, 500 steps), the same
number of torch threads for both.  Prints relaxations per second of both, their ratio, and the
converged share and median Ẽ/atom of both (they must agree), then where the batched time goes,
in the parts of a step that issue 24 names.

With ``--cli-n N`` the same run also times the command a user types, ``respmatch generate``
of N cells in a fresh process (wall time, start-up included), against the serial rate measured
above: once with the command's own default batch, or once per ``--cli-batch-size`` value; ``--startup`` times ``respmatch --help`` and a ``generate`` process up to its first step,
and names the heavy packages loaded by then.

    python benchmarks/generate_speed.py --n 256 --n-serial 16 --batch-size 256 --cli-n 512 --startup
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

import respmatch
from respmatch.builtin import model_path as builtin_model_path
from respmatch.calculator import ResponseMatchingCalculator
from respmatch.model.denoiser import Denoiser
from respmatch.search import relax as relax_module
from respmatch.search.spec import search_preset
from respmatch.search.starts import crystal_start, start_rng
from respmatch.search.verlet import VerletLists
from respmatch.structures import Structures

ROOT = Path(__file__).resolve().parent.parent
# Packages a ``generate`` run has no use for (issue 24): none may be loaded by its first step.
HEAVY = ("dask", "distributed", "pymatgen", "rdkit", "sevenn", "chgnet", "plotly", "matplotlib", "pyxtal", "scipy")

# The parts of a batched step, each the wall time of these callables (nested ones are taken out
# of their parents below).  ``owner.name`` is wrapped for the run.
PARTS = {
    "model forward": [(Denoiser, "edge_layout"), (Denoiser, "atomic_energies")],
    "model call": [(Denoiser, "forward")],
    "lists: build (vesin)": [(VerletLists, "_rebuild")],
    "lists: skin check": [(VerletLists, "_shortest_unlisted")],
    "lists: call": [(VerletLists, "refresh"), (VerletLists, "listed")],
    "lists: keep": [(VerletLists, "keep")],
    "FIRE and cell update": [
        (relax_module, "fire_step"),
        (relax_module, "langevin_step"),
        (relax_module, "filter_forces"),
        (relax_module, "keep_finite"),
        (relax_module.FireState, "structures"),
    ],
    "convergence checks": [(relax_module, "largest_force"), (relax_module, "collapsing")],
    "admit and retire": [
        (relax_module.FireState, "start"),
        (relax_module.FireState, "concatenate"),
        (relax_module.FireState, "select"),
        (relax_module.BatchRelaxer, "_advance"),
        (Structures, "select"),
        (Structures, "to_atoms"),
    ],
}


def serial(model, starts, stage, dtype):
    calculator = ResponseMatchingCalculator(model, dtype=dtype)
    results = []
    for atoms in starts:
        atoms = atoms.copy()
        atoms.calc = calculator
        optimizer = FIRE(FrechetCellFilter(atoms, constant_volume=True), maxstep=stage.max_step, logfile=None)
        converged = optimizer.run(fmax=stage.fmax, steps=stage.max_steps)
        results.append((converged, atoms.get_potential_energy() / len(atoms)))
    return results


class Timers:
    """Accumulate the wall time of callables (``{label: [(owner, attribute), ...]}``) during a run.

    Static and class methods are wrapped as what they are, so a wrapped class still works.
    ``wait`` (e.g. a GPU synchronisation) runs before each reading of the clock.
    """

    def __init__(self, targets, wait=lambda: None):
        self.seconds, self.wait = defaultdict(float), wait
        self.targets = [
            (label, owner, name, inspect.getattr_static(owner, name))
            for label, pairs in targets.items()
            for owner, name in pairs
        ]

    def __enter__(self):
        for label, owner, name, raw in self.targets:
            kind = type(raw) if isinstance(raw, (staticmethod, classmethod)) else None
            function = raw.__func__ if kind else raw

            def timed(*a, _f=function, _label=label, **k):
                self.wait()
                started = time.perf_counter()
                try:
                    return _f(*a, **k)
                finally:
                    self.wait()
                    self.seconds[_label] += time.perf_counter() - started

            setattr(owner, name, kind(timed) if kind else timed)
        return self

    def __exit__(self, *exc):
        for _, owner, name, raw in self.targets:
            setattr(owner, name, raw)


def step_shares(seconds: dict, total: float) -> list[tuple[str, float]]:
    """The issue's parts of a step from the timers: nested parts taken out of their parents."""
    forward = seconds["model forward"]
    lists_build, lists_check = seconds["lists: build (vesin)"], seconds["lists: skin check"]
    rows = [
        ("model forward (edge layout, features, readout)", forward),
        ("model backward (autograd, forces, stress)", seconds["model call"] - forward),
        ("neighbour lists: build (vesin)", lists_build),
        ("neighbour lists: skin check", lists_check),
        ("neighbour lists: cut to cutoff, edge vectors, drop leavers",
         seconds["lists: call"] - lists_build - lists_check + seconds["lists: keep"]),
        ("FIRE and cell update (filter forces, FIRE, positions and cells)", seconds["FIRE and cell update"]),
        ("bookkeeping: convergence checks", seconds["convergence checks"]),
        ("bookkeeping: admit and retire", seconds["admit and retire"]),
    ]
    rows.append(("Python overhead and the rest of the loop", total - sum(s for _, s in rows)))
    return rows


def startup_figures(model: str, threads: int) -> dict:
    """Seconds of ``respmatch --help``, and of a ``generate`` process up to its first model call,
    with the heavy packages loaded by then (each a fresh process, the best of three)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "respmatch.cli"]
    helps = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([*command, "--help"], env=env, check=True, capture_output=True)
        helps.append(time.perf_counter() - started)
    # The first model call ends the process: what it reports is start-up alone.
    probe = (
        "import sys, time, json; started = time.perf_counter()\n"
        "import respmatch.model.denoiser as d\n"
        "def first(*a, **k):\n"
        f"    heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "    print(json.dumps({'seconds': time.perf_counter() - started, 'heavy': heavy})); sys.stdout.flush()\n"
        "    import os; os._exit(0)\n"
        "d.Denoiser.forward = first\n"
        "from respmatch.cli import main\n"
        "main(sys.argv[1:])\n"
    )
    firsts = []
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(3):
            out = subprocess.run(
                [sys.executable, "-c", probe, "generate", "--model", model, "--composition", "C8",
                 "--volume-per-atom", "5", "--n", "8", "--quiet", "--threads", str(threads),
                 "--out", str(Path(folder) / f"probe{attempt}.db")],
                env=env, check=True, capture_output=True, text=True,
            )
            firsts.append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = min(firsts, key=lambda f: f["seconds"])
    return {"help_s": min(helps), "generate_first_step_s": first["seconds"], "heavy_loaded": first["heavy"]}


def cli_run(model: str, n: int, batch_size: str | None, threads: int, dtype: str, extra: list[str]) -> float:
    """Wall seconds of ``respmatch generate`` of ``n`` C8 cells at 5 Å³/atom, start-up included
    (``batch_size`` None: the command's default)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    batch = [] if batch_size is None else ["--batch-size", batch_size]
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "respmatch.cli", "generate", "--model", model, "--composition", "C8",
             "--volume-per-atom", "5", "--n", str(n), *batch, "--threads", str(threads),
             "--dtype", dtype, "--quiet", "--out", str(Path(folder) / "run.db"), *extra],
            env=env, check=True, capture_output=True,
        )
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="diamond", help="checkpoint or built-in model (default: diamond)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--n-serial", type=int, help="relax only the first N serially (default: all)")
    parser.add_argument("--atoms", type=int, default=8)
    parser.add_argument("--volume-per-atom", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli-n", type=int, help="also time `respmatch generate` of this many C8 cells")
    parser.add_argument("--cli-batch-size", nargs="+", default=[None],
                        help="that command's --batch-size, one run per value, in turn (default: its own default)")
    parser.add_argument("--cli-option", action="append", default=[], help="extra argument of that command")
    parser.add_argument("--startup", action="store_true", help="also time start-up (`--help`, first step)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    path = builtin_model_path(args.model)
    model = respmatch.load_model(path, dtype=dtype)
    (stage,) = search_preset("fixed-volume").stages
    volume = args.volume_per_atom * args.atoms
    starts = [crystal_start([6] * args.atoms, volume, start_rng(args.seed, i)) for i in range(args.n)]
    n_serial = args.n_serial or args.n

    started = time.perf_counter()
    serial_results = serial(model, starts[:n_serial], stage, dtype)
    serial_seconds = time.perf_counter() - started

    relaxer = relax_module.BatchRelaxer(model, batch_size=args.batch_size, dtype=dtype)
    with Timers(PARTS) as timers:
        jobs = (relax_module.Job(key=i, atoms=a.copy(), stages=(stage,)) for i, a in enumerate(starts))
        started = time.perf_counter()
        batched = sorted(relaxer.run(jobs), key=lambda r: r.key)
        batched_seconds = time.perf_counter() - started

    def summary(converged, energies):
        return f"{np.mean(converged):.0%}", f"{statistics.median(energies):.4f}"

    serial_rate = n_serial / serial_seconds
    batched_rate = args.n / batched_seconds
    print(f"## {args.n} fixed-volume C{args.atoms} cells at {args.volume_per_atom} Å³/atom, "
          f"{args.threads} threads, {args.dtype}, model {path.name}")
    print("| method | relaxations | seconds | relaxations/s | converged | median Ẽ/atom (eV) |")
    print("|---|---|---|---|---|---|")
    share, median = summary([c for c, _ in serial_results], [e for _, e in serial_results])
    print(f"| serial ASE FIRE + FrechetCellFilter | {n_serial} | {serial_seconds:.1f} | {serial_rate:.3f} | {share} | {median} |")
    share, median = summary([r.converged for r in batched], [r.energy / args.atoms for r in batched])
    print(f"| respmatch batched (batch {args.batch_size}) | {args.n} | {batched_seconds:.1f} | {batched_rate:.3f} | {share} | {median} |")
    walls = []
    for batch in args.cli_batch_size if args.cli_n else []:
        walls.append((batch, cli_run(str(path), args.cli_n, batch, args.threads, args.dtype, args.cli_option)))
        option = "" if batch is None else f" --batch-size {batch}"
        print(f"| `respmatch generate --n {args.cli_n}{option}` (wall, start-up included) | {args.cli_n} | "
              f"{walls[-1][1]:.1f} | {args.cli_n / walls[-1][1]:.3f} | | |", flush=True)
    print(f"\nspeed-up: {batched_rate / serial_rate:.1f}× relaxations per second (in-process batch)")
    for batch, wall in walls:
        which = "its default batch" if batch is None else f"--batch-size {batch}"
        print(f"speed-up of the CLI run ({which}): {args.cli_n / wall / serial_rate:.1f}× (wall time with start-up)")
    same = [
        (abs(e - r.energy / args.atoms) < 1e-3, c == r.converged)
        for (c, e), r in zip(serial_results, batched[:n_serial])
    ]
    print(f"per structure: same Ẽ/atom (1e-3 eV) {sum(a for a, _ in same)}/{n_serial}, "
          f"same converged flag {sum(b for _, b in same)}/{n_serial}")
    steps = sum(r.steps for r in batched)
    print(f"\nbatched: {relaxer.model_calls} model calls for {steps} structure-steps "
          f"({steps / relaxer.model_calls:.1f} structures per call, "
          f"{1e3 * batched_seconds / relaxer.model_calls:.2f} ms per step)")
    print("| part of a step | seconds | share |")
    print("|---|---|---|")
    for name, seconds in step_shares(timers.seconds, batched_seconds):
        print(f"| {name} | {seconds:.2f} | {seconds / batched_seconds:.0%} |")
    if args.startup:
        figures = startup_figures(str(path), args.threads)
        print(f"\nstart-up: `respmatch --help` {figures['help_s']:.2f} s; `respmatch generate` up to its "
              f"first step {figures['generate_first_step_s']:.2f} s; heavy packages loaded by then: "
              f"{', '.join(figures['heavy_loaded']) or 'none'}")


if __name__ == "__main__":
    main()
