"""Generation speed: serial ASE FIRE, one structure at a time, against respmatch's batched FIRE.

Same model, same random starts (fixed-volume 8-atom carbon cells, the one-shot diamond protocol:
constant-volume FIRE with FrechetCellFilter, max step 0.01 Å, fmax 5e-4, 500 steps), the same
number of torch threads for both.  Prints relaxations per second of both, their ratio, and the
converged share and median Ẽ/atom of both (they must agree), then where the batched time goes.

    python benchmarks/generate_speed.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

import respmatch
from respmatch.calculator import ResponseMatchingCalculator
from respmatch.search import relax as relax_module
from respmatch.search.spec import search_preset
from respmatch.search.starts import crystal_start, start_rng
from respmatch.search.verlet import VerletLists
from respmatch.train import TrainConfig


def model_path(args) -> Path:
    """The given model, or a diamond model trained once (and kept) from the shared data."""
    if args.model:
        return Path(args.model)
    path = Path(__file__).parent / "out" / "diamond.pt"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        structures = respmatch.read_structures(Path(args.data_dir) / "diamond" / "diamond-72.xyz")
        respmatch.train(structures, path, config=TrainConfig(epochs=60))
    return path


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
    """Accumulate the wall time of named callables (``{label: (owner, attribute)}``) while a run goes."""

    def __init__(self, targets):
        self.seconds = defaultdict(float)
        self.targets = {label: (owner, name, getattr(owner, name)) for label, (owner, name) in targets.items()}

    def __enter__(self):
        for label, (owner, name, function) in self.targets.items():
            def timed(*a, _f=function, _label=label, **k):
                started = time.perf_counter()
                out = _f(*a, **k)
                self.seconds[_label] += time.perf_counter() - started
                return out
            setattr(owner, name, timed)
        return self

    def __exit__(self, *exc):
        for owner, name, function in self.targets.values():
            setattr(owner, name, function)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--model", help="trained model (default: train one on diamond-72)")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--n-serial", type=int, help="relax only the first N serially (default: all)")
    parser.add_argument("--atoms", type=int, default=8)
    parser.add_argument("--volume-per-atom", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)

    path = model_path(args)
    model = respmatch.load_model(path, dtype=dtype)
    (stage,) = search_preset("fixed-volume").stages
    volume = args.volume_per_atom * args.atoms
    starts = [
        crystal_start([6] * args.atoms, volume, start_rng(args.seed, i)) for i in range(args.n)
    ]
    n_serial = args.n_serial or args.n

    started = time.perf_counter()
    serial_results = serial(model, starts[:n_serial], stage, dtype)
    serial_seconds = time.perf_counter() - started

    relaxer = relax_module.BatchRelaxer(model, batch_size=args.batch_size, dtype=dtype)
    parts = {
        "model (energy, forces, stress)": (relaxer.potential, "forward"),
        "neighbour lists (vesin, skin)": (VerletLists, "graph"),
        **{name: (relax_module, name) for name in ("filter_forces", "fire_step", "largest_force")},
    }
    with Timers(parts) as timers:
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
    print(f"\nspeed-up: {batched_rate / serial_rate:.1f}× relaxations per second")
    same = [
        (abs(e - r.energy / args.atoms) < 1e-3, c == r.converged)
        for (c, e), r in zip(serial_results, batched[:n_serial])
    ]
    print(f"per structure: same Ẽ/atom (1e-3 eV) {sum(a for a, _ in same)}/{n_serial}, "
          f"same converged flag {sum(b for _, b in same)}/{n_serial}")
    steps = sum(r.steps for r in batched)
    print(f"\nbatched: {relaxer.model_calls} model calls for {steps} structure-steps "
          f"({steps / relaxer.model_calls:.1f} structures per call)")
    print("| part | seconds | share |")
    print("|---|---|---|")
    for name, seconds in sorted(timers.seconds.items(), key=lambda kv: -kv[1]):
        print(f"| {name} | {seconds:.2f} | {seconds / batched_seconds:.0%} |")


if __name__ == "__main__":
    main()
