"""How much of the distance to EDM is geometry and how much is bonding: relax RM's generated
QM9 molecules with GFN2-xTB and score them again.

EDM's metrics read bond orders from bond lengths with margins of 3-10 pm, so a molecule whose
bonding is right but whose bonds are a few pm off fails them.  A short GFN2-xTB relaxation moves
each molecule into the nearest physical minimum without (as a rule) breaking bonds; comparing the
metrics before and after, on the same molecules, separates the two causes:

- metrics that rise after the relaxation were lost to imprecise geometry (RM's minimum lies near
  the right one);
- what stays invalid after it has the wrong bonding (RM's minimum is another molecule, or none);
- "graph changed": strictly valid before and after with another SMILES, or valid only after.

Reads OUT/generated.extxyz of a finished ``qm9_molecules.py`` run (so the 2,000-try search is
not repeated), relaxes a seeded sample of it with the re-check's own molecule relaxation
(``recheck.check.relax_structures``: ASE FIRE on GFN2-xTB through tblite, a failure counted
and scored unrelaxed) and scores it with EDM's
metrics, which the re-check's evaluation (``qm7_molecules.py --recheck``) does not report.
Writes OUT/refined.extxyz and OUT/refine.json and prints the table.

    python benchmarks/qm9_molecules.py --model qm9 --tries 2000 --out-dir benchmarks/out/qm9-builtin
    python benchmarks/qm9_refine.py --out-dir benchmarks/out/qm9-builtin --molecules 300
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from ase.io import read, write
from rdkit.rdBase import BlockLogs

from respmatch.chem import judge
from respmatch.evaluate.edm import edm_metrics
from respmatch.recheck.check import RecheckSettings, relax_structures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True, help="a qm9_molecules.py output folder")
    parser.add_argument("--molecules", type=int, default=300, help="generated molecules relaxed (a seeded sample)")
    parser.add_argument("--potential", default="gfn2-xtb")
    parser.add_argument("--fmax", type=float, default=0.02, help="eV/Å")
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generated = read(args.out_dir / "generated.extxyz", index=":")
    picked = np.sort(np.random.default_rng(args.seed).choice(len(generated), min(args.molecules, len(generated)), replace=False))
    before = [generated[i] for i in picked]
    settings = RecheckSettings(args.potential, relax=True, fmax=args.fmax, max_steps=args.max_steps)

    started = time.process_time()
    results = relax_structures(before, settings)  # (result, None) or (None, error: e.g. an SCF that failed)
    seconds = time.process_time() - started
    # A failed relaxation is scored on its generated geometry; copies drop the calculators,
    # whose results extxyz would otherwise write.
    after = [(result[0] if result else atoms).copy() for atoms, (result, _) in zip(before, results)]
    converged = sum(bool(result and result[3]) for result, _ in results)
    failed = sum(result is None for result, _ in results)
    write(args.out_dir / "refined.extxyz", after, format="extxyz")

    _quiet = BlockLogs()
    verdicts = [(judge(a), judge(b)) for a, b in zip(before, after)]
    strict_before = sum(v["strict"] for v, _ in verdicts)
    strict_after = sum(w["strict"] for _, w in verdicts)
    changed = sum(w["strict"] and (not v["strict"] or v["smiles"] != w["smiles"]) for v, w in verdicts)
    lost = sum(v["strict"] and not w["strict"] for v, w in verdicts)
    n = len(before)
    summary = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "n": n,
        "edm_before": edm_metrics(before),
        "edm_after": edm_metrics(after),
        "strict_valid_before": strict_before / n,
        "strict_valid_after": strict_after / n,
        "valid_after_with_another_graph": changed / n,
        "valid_before_lost": lost / n,
        "relax_converged": converged / n,
        "relax_failed": failed / n,
        "relax_cpu_seconds": seconds,
    }
    (args.out_dir / "refine.json").write_text(json.dumps(summary, indent=1) + "\n")

    print(f"{n} generated molecules, {args.potential} relaxation (fmax {args.fmax} eV/Å, ≤ {args.max_steps} steps): "
          f"{converged} converged, {failed} failed, {seconds:.0f} CPU-s")
    print(f"{'':22} {'atom stable':>12} {'mol stable':>11} {'RDKit valid':>12} {'strictly valid':>15}")
    for name, edm, strict in (("as generated", summary["edm_before"], strict_before),
                              (f"after {args.potential}", summary["edm_after"], strict_after)):
        print(f"{name:22} {edm['atom_stable']:>12.1%} {edm['molecule_stable']:>11.1%} "
              f"{edm['rdkit_valid']:>12.1%} {strict / n:>15.1%}")
    print(f"strictly valid after with another graph than before (or valid only after): {changed / n:.1%}; "
          f"strictly valid before, not after: {lost / n:.1%}")


if __name__ == "__main__":
    main()
