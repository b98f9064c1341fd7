"""SevenNet-0 relaxations on the CPU, per core: serial ASE against the funnel's batched path.

Crystals: the first --n MP-20 val.csv structures, rattled (0.05 Å) and strained 3% as in
benchmarks/recheck_speed.py, relaxed with FIRE on FrechetCellFilter (cell and positions) to
--fmax or --max-steps.  Serial: ASE's FIRE with SevenNet's own ASE calculator, one structure
at a time (the first --n-serial).  Batched: the funnel's path (respmatch.predict.physics: the
batched relaxer driving ``batched_potential("sevennet-0")``), once per --variants entry:

  float64       today's funnel: the relaxer in float64 (SevenNet itself runs in float32)
  float32       the relaxer in float32
  compiled      float64, SevenNet's convolutions under torch.compile (compile time included)
  batch=N       float64 with N cells per call instead of --batch-size

Every variant relaxes the same starts in the same process, one after the other, with the same
torch threads (default 1: figures are per core).  Printed: structures and structure-steps per
second, the step's parts (--profile), and how far each variant's relaxed energies are from the
first variant's (largest |ΔE|/atom, and whether the per-formula order of energies changes).

    python benchmarks/sevennet_cpu.py --data-dir ../shared/data --n 16 --n-serial 2 --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
from generate_speed import Timers
from recheck_speed import perturbed

import respmatch
from respmatch.recheck import potentials
from respmatch.search import relax as relax_module
from respmatch.search.relax import BatchRelaxer, Job, Stage
from respmatch.search.verlet import VerletLists

# The parts of a batched step (``generate_speed.Timers``); the model's forward and its
# backward (SevenNet's force_output module, an autograd pass) are timed by module hooks.
PARTS = {
    "potential call": [(potentials.SevenNetPotential, "__call__")],
    "neighbour lists": [(VerletLists, "refresh"), (VerletLists, "listed"), (VerletLists, "keep")],
    "FIRE and cell update": [
        (relax_module, "fire_step"),
        (relax_module, "filter_forces"),
        (relax_module, "keep_finite"),
        (relax_module.FireState, "structures"),
    ],
    "convergence checks": [(relax_module, "largest_force"), (relax_module, "collapsing")],
}


def serial(starts, fmax, max_steps):
    calculator = potentials.ase_calculator("sevennet-0")
    out = []
    for atoms in starts:
        atoms = atoms.copy()
        atoms.calc = calculator
        optimizer = FIRE(FrechetCellFilter(atoms), logfile=None)
        converged = optimizer.run(fmax=fmax, steps=max_steps)
        out.append((atoms.get_potential_energy() / len(atoms), optimizer.nsteps, bool(converged)))
    return out


class ModelClock:
    """Seconds in SevenNet's forward (all modules but force_output) and backward (force_output)."""

    def __init__(self, model):
        self.seconds, self.started = defaultdict(float), {}
        for name, module in model.named_children():
            part = "SevenNet backward (forces, stress)" if name == "force_output" else "SevenNet forward"
            module.register_forward_pre_hook(lambda m, i, name=name: self.started.__setitem__(name, time.perf_counter()))
            module.register_forward_hook(
                lambda m, i, o, name=name, part=part: self.seconds.__setitem__(
                    part, self.seconds[part] + time.perf_counter() - self.started[name]
                )
            )


class CallClock:
    """The potential, with the wall time of each call kept (compilations show as slow calls)."""

    def __init__(self, potential):
        self.potential, self.cutoff, self.seconds = potential, potential.cutoff, []

    def __call__(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return self.potential(*args, **kwargs)
        finally:
            self.seconds.append(time.perf_counter() - started)

    def slow_calls(self) -> tuple[int, float]:
        """Calls over 3× the median call, and their seconds."""
        slow = [s for s in self.seconds if s > 3 * float(np.median(self.seconds))]
        return len(slow), sum(slow)


def batched(starts, potential, fmax, max_steps, batch_size, dtype):
    stage = Stage("physical", fmax=fmax, max_steps=max_steps, cell="full")
    jobs = (Job(key=k, atoms=Atoms(a.numbers, a.positions, cell=a.cell, pbc=True), stages=(stage,))
            for k, a in enumerate(starts))
    relaxer = BatchRelaxer(potential, batch_size=batch_size, dtype=dtype)
    results = sorted(relaxer.run(jobs), key=lambda r: r.key)
    return [(r.energy / len(r.atoms), r.steps, r.converged) for r in results], relaxer.model_calls


def variant_settings(name: str, batch_size: int) -> dict:
    if name.startswith("batch="):
        return {"batch_size": int(name.partition("=")[2]), "dtype": torch.float64, "compiled": False}
    if name not in ("float64", "float32", "compiled"):
        raise SystemExit(f"unknown variant {name!r}")
    return {"batch_size": batch_size, "dtype": torch.float32 if name == "float32" else torch.float64,
            "compiled": name == "compiled"}


def order_changes(formulas, these, those) -> tuple[int, int]:
    """Pairs of structures of one formula whose energies are ordered differently, and pairs."""
    pairs = [(i, j) for i in range(len(formulas)) for j in range(i + 1, len(formulas)) if formulas[i] == formulas[j]]
    return sum((these[i] - these[j]) * (those[i] - those[j]) < 0 for i, j in pairs), len(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--n-serial", type=int, default=2, help="relax the first N with ASE too (0: none)")
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--max-steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["float64", "float32"])
    parser.add_argument("--profile", action="store_true", help="split the first variant's step into parts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    starts = perturbed(respmatch.read_structures(Path(args.data_dir) / "mp_20" / "val.csv")[: args.n], seed=0)
    formulas = [a.get_chemical_formula(empirical=True) for a in starts]
    atoms = sum(len(a) for a in starts)
    print(f"## SevenNet-0 relaxations, {args.n} MP-20 val cells ({atoms} atoms), fmax {args.fmax}, at most "
          f"{args.max_steps} steps, {args.threads} torch thread(s), torch {torch.__version__}")
    print("| relaxer | structures | seconds | structures/s | structure-steps/s | model calls | converged |")
    print("|---|---|---|---|---|---|---|", flush=True)
    if args.n_serial:
        potentials.ase_calculator("sevennet-0")  # loading is not timed
        started = time.perf_counter()
        ase = serial(starts[: args.n_serial], args.fmax, args.max_steps)
        seconds = time.perf_counter() - started
        steps = sum(s for _, s, _ in ase)
        print(f"| serial ASE (SevenNetCalculator, FIRE + FrechetCellFilter) | {args.n_serial} | {seconds:.1f} | "
              f"{args.n_serial / seconds:.4f} | {steps / seconds:.2f} | {steps} | {sum(c for *_, c in ase)} |",
              flush=True)
    reference = None
    for k, name in enumerate(args.variants):
        settings = variant_settings(name, args.batch_size)
        potential = potentials.SevenNetPotential(compiled=settings["compiled"])
        clock = ModelClock(potential.model) if args.profile and k == 0 else None
        calls = CallClock(potential)
        with Timers(PARTS if clock else {}) as timers:
            started = time.perf_counter()
            results, n_calls = batched(starts, calls, args.fmax, args.max_steps, settings["batch_size"],
                                       settings["dtype"])
            seconds = time.perf_counter() - started
        steps = sum(s for _, s, _ in results)
        print(f"| batched, {name} ({settings['batch_size']} per call) | {args.n} | {seconds:.1f} | "
              f"{args.n / seconds:.4f} | {steps / seconds:.2f} | {n_calls} | {sum(c for *_, c in results)} |",
              flush=True)
        print("    calls over 3x the median: {} ({:.1f} s)".format(*calls.slow_calls()), flush=True)
        energies = np.array([e for e, _, _ in results])
        if reference is None:
            reference = energies
            if args.n_serial:
                difference = np.abs(energies[: args.n_serial] - np.array([e for e, _, _ in ase])).max()
                same_steps = sum(a[1] == b[1] for a, b in zip(ase, results))
                print(f"    against serial ASE: largest |ΔE|/atom {difference:.2e} eV, same step count "
                      f"{same_steps}/{args.n_serial}", flush=True)
        else:
            print(f"    against {args.variants[0]}: largest |ΔE|/atom {np.abs(energies - reference).max():.2e} eV, "
                  "pairs of one formula ordered differently: {} of {}".format(
                      *order_changes(formulas, energies, reference)), flush=True)
        if clock:
            parts = dict(timers.seconds)
            parts.update(clock.seconds)
            call = parts.pop("potential call")
            model = sum(clock.seconds.values())
            parts["SevenNet input (graph in its layout, collate)"] = call - model
            parts["rest of the loop (admit, retire, Python)"] = seconds - call - sum(
                v for key, v in timers.seconds.items() if key != "potential call")
            for part, value in parts.items():
                print(f"    {part}: {value:.1f} s ({value / seconds:.0%})", flush=True)


if __name__ == "__main__":
    main()
