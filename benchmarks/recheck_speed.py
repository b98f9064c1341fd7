"""Re-check speed per potential: structures per second, single points and relaxations.

Crystals: the first --n MP-20 val.csv structures, rattled (0.05 Å) and strained 3% so that a
relaxation has work to do; relaxed with ASE (FIRE on FrechetCellFilter, one structure at a time)
and with respmatch's batched FIRE driving the potential's batched form (all --n in one batch).
Molecules: the first --n QM7 molecules, rattled, relaxed with ASE FIRE.  Relaxations stop at
fmax 0.05 eV/Å or --max-steps.  The two relaxers run alternately, so a shared machine slows both
alike.

    python benchmarks/recheck_speed.py --data-dir ../shared/data --n 8
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import respmatch
from respmatch.recheck.check import RecheckSettings, recheck_chunk
from respmatch.recheck.potentials import ase_calculator, batched_potential


def perturbed(structures, seed: int):
    out = []
    for k, atoms in enumerate(structures):
        atoms = atoms.copy()
        atoms.rattle(0.05, seed=seed + k)
        if atoms.pbc.all():
            atoms.set_cell(atoms.cell.array * 1.03, scale_atoms=True)
        out.append(atoms)
    return out


def timed(items, settings):
    started = time.perf_counter()
    records = recheck_chunk(items, settings)
    seconds = time.perf_counter() - started
    steps = sum(r.get("relax_steps", 0) for r in records)
    return seconds, steps, sum(bool(r.get("relax_converged")) for r in records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--potentials", nargs="+", default=["sevennet-0", "chgnet", "gfn2-xtb"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data_dir)
    crystals = perturbed(respmatch.read_structures(data / "mp_20" / "val.csv")[: args.n], seed=0)
    molecules = perturbed(respmatch.read_structures(data / "qm7" / "qm7.extxyz")[: args.n], seed=0)
    print(f"# re-check speed, {args.n} structures each, {args.threads} thread(s), at most {args.max_steps} steps")
    print(f"crystals: {', '.join(a.get_chemical_formula() for a in crystals)}")
    for name in args.potentials:
        ase_calculator(name)  # loading is not timed
        structures = molecules if name.startswith("gfn") else crystals
        items = list(enumerate(structures))
        seconds, _, _ = timed(items, RecheckSettings(name))
        print(f"{name}: single points {len(items) / seconds:.2f} structures/s")
        relax = RecheckSettings(name, relax=True, max_steps=args.max_steps)
        seconds, steps, converged = timed(items, relax)
        print(f"{name}: ASE FIRE relaxations {len(items) / seconds:.3f} structures/s "
              f"({steps} steps, {steps / seconds:.1f} steps/s, {converged}/{len(items)} converged)")
        if name.startswith("gfn"):
            continue
        batched_potential(name)
        seconds_b, steps_b, converged_b = timed(items, RecheckSettings(name, relax=True, max_steps=args.max_steps,
                                                                        batch_size=len(items)))
        print(f"{name}: batched FIRE relaxations {len(items) / seconds_b:.3f} structures/s "
              f"({steps_b} steps, {converged_b}/{len(items)} converged); {seconds / seconds_b:.2f}x ASE")


if __name__ == "__main__":
    main()
