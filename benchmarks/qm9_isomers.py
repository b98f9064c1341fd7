"""Isomer recall of ``respmatch predict`` on held-out QM9 formulas (issue 25, a metric no
diffusion benchmark reports).

For each formula (those of held-out QM9 molecules, drawn with a seed from the split
``qm9_molecules.py`` makes: --held-out-fraction 0.1, --seed 0, the split the built-in ``qm9``
model was trained on), ``respmatch.predict`` searches the largest N of --n valid molecules and
relaxes them with GFN2-xTB.  For each N, over the first N valid molecules the search found:

- recall: the share of QM9's own isomers of the formula found among them (QM9's isomers: every
  QM9 molecule of the formula, its geometry perceived by the package's one judge, strictly valid);
- lowest found / ranked first: whether QM9's lowest-U0 isomer of the formula is among them, and
  whether ``predict`` ranks it first by GFN2-xTB (the ranking rebuilt from those N relaxations);
- not in QM9: distinct valid molecules found that QM9 does not hold for the formula.

Beside them: distinct valid molecules per CPU-second of the search (this process's CPU time, at
the largest N; one torch thread by default, so that CPU and wall time agree).

Writes OUT/FORMULA.db (the prediction runs; --resume continues them), OUT/qm9_reference.json (the
formulas and their QM9 isomers, so that a resumed pass does not read QM9 again) and OUT/summary.json.

    python benchmarks/qm9_isomers.py --formulas 5                # N = 50 and 200
    python benchmarks/qm9_isomers.py --formulas 3 --n 20,50 --max-atoms 12   # minutes on one core
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from rdkit.rdBase import BlockLogs

import respmatch
from qm9_molecules import HELD_OUT_FRACTION, check_builtin_split, read_qm9, split
from respmatch.builtin import model_path
from respmatch.chem import judge
from respmatch.predict.isomers import rank_isomers
from respmatch.predict.molecule_funnel import Relaxation, StageTime
from respmatch.predict.molecule_settings import MoleculeSettings
from respmatch.run import open_run


REFERENCE_FORMULAS = 20  # formulas whose QM9 isomers a first pass perceives and keeps


def qm9_isomers(molecules: list[Atoms]) -> tuple[set[str], str | None]:
    """(strictly valid SMILES of the formula's QM9 molecules, SMILES of its lowest-U0 molecule)."""
    verdicts = [(a.info["u0_hartree"], judge(a)) for a in molecules]
    lowest = min(verdicts, key=lambda v: v[0])[1]
    return {v["smiles"] for _, v in verdicts if v["strict"]}, lowest["smiles"] if lowest["strict"] else None


def qm9_reference(args, out: Path) -> dict[str, dict]:
    """Formulas of held-out molecules in their drawn order (the first ``REFERENCE_FORMULAS``, at
    least --formulas), each with its QM9 isomers and lowest-U0 isomer; kept in
    OUT/qm9_reference.json, so that a resumed pass does not read QM9 (a minute on a busy machine)."""
    path = out / "qm9_reference.json"
    key = {k: getattr(args, k) for k in ("model", "held_out_fraction", "seed", "max_atoms")}
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["key"] == key and len(stored["formulas"]) >= args.formulas:
            return stored["formulas"]
    qm9 = read_qm9()
    _, held_out = split(qm9, args.held_out_fraction, args.seed)
    elements = set(respmatch.load_model(model_path(args.model)).config.elements)
    drawn = [held_out[i].get_chemical_formula() for i in np.random.default_rng(args.seed + 2).permutation(len(held_out))
             if set(held_out[i].numbers) <= elements and len(held_out[i]) <= (args.max_atoms or len(held_out[i]))]
    by_formula = {}
    for atoms in qm9:
        by_formula.setdefault(atoms.get_chemical_formula(), []).append(atoms)
    _quiet = BlockLogs()
    formulas = {}
    for formula in list(dict.fromkeys(drawn))[: max(args.formulas, REFERENCE_FORMULAS)]:
        isomers, lowest = qm9_isomers(by_formula[formula])
        formulas[formula] = {"isomers": sorted(isomers), "lowest": lowest}
    path.write_text(json.dumps({"key": key, "formulas": formulas}, indent=1) + "\n")
    return formulas


def first_found(out: Path, n: int) -> list[tuple[str, str]]:
    """(run key, search SMILES) of the first ``n`` valid molecules, in the order the search stored them."""
    run = open_run(out)
    order = sorted(range(len(run.entries)), key=lambda k: run.row_ids[k])[:n]
    pairs = [run.entries[k].pairs for k in order]
    return [(f"{p['composition']}/{p['try']}", p["smiles"]) for p in pairs]


def measure(out: Path, formula: str, n: int, isomers: set[str], lowest: str | None, rmsd: float) -> dict:
    found = first_found(out, n)
    relaxations = open_run(out).stages.records("relax", Relaxation)
    members = [{"key": key, "smiles": r.smiles, "energy": r.energy, "atoms": Atoms(r.numbers, r.positions)}
               for key, _ in found if (r := relaxations[key]).smiles is not None]
    ranking = rank_isomers(members, rmsd)
    distinct = {smiles for _, smiles in found}
    return {
        "n": len(found),
        "distinct": len(distinct),
        "qm9_isomers": len(isomers),
        "recall": len(distinct & isomers) / len(isomers) if isomers else float("nan"),
        "lowest_found": lowest in distinct,
        "ranked_first": bool(ranking) and ranking[0]["smiles"] == lowest,
        "not_in_qm9": len(distinct - isomers),
        "rank_of_lowest": next((r for r, i in enumerate(ranking, 1) if i["smiles"] == lowest), None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out-dir", default="benchmarks/out/qm9-isomers")
    parser.add_argument("--model", default="qm9", help="a molecule model; qm9: the built-in one")
    parser.add_argument("--formulas", type=int, default=5, help="held-out formulas searched")
    parser.add_argument("--max-atoms", type=int, help="only formulas of at most this many atoms (a short run)")
    parser.add_argument("--n", default="50,200", help="valid molecules per formula at which to measure")
    parser.add_argument("--held-out-fraction", type=float, default=HELD_OUT_FRACTION)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true", help="continue the runs in --out-dir")
    args = parser.parse_args()
    sizes = sorted(int(n) for n in args.n.split(","))
    check_builtin_split(parser, args)
    torch.set_num_threads(args.threads)
    # Stopped (``timeout``, a scheduler): unwind, so that the runs store the time spent so far.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    reference = qm9_reference(args, out)
    _quiet = BlockLogs()
    settings = MoleculeSettings(n=sizes[-1], seed=args.seed)
    rows = {}
    formulas = list(reference)[: args.formulas]
    for formula in formulas:
        isomers, lowest = set(reference[formula]["isomers"]), reference[formula]["lowest"]
        db = out / f"{formula}.db"
        respmatch.predict(formula, args.model, db, settings=settings, resume=args.resume,
                          batch_size=args.batch_size, progress=False)
        search = open_run(db).stages.records("time", StageTime)["search"]
        rows[formula] = {"search_cpu_s": search.cpu_s, "search_wall_s": search.wall_s, "lowest_smiles": lowest,
                         **{str(n): measure(db, formula, n, isomers, lowest, settings.rmsd) for n in sizes}}
        top = rows[formula][str(sizes[-1])]
        rows[formula]["distinct_per_cpu_s"] = top["distinct"] / search.cpu_s
        print(f"{formula}: {len(isomers)} QM9 isomers, search {search.cpu_s:.0f} CPU-s, lowest-U0 {lowest}; "
              + "; ".join(f"N={n}: recall {rows[formula][str(n)]['recall']:.1%}, lowest found "
                          f"{rows[formula][str(n)]['lowest_found']}, ranked first {rows[formula][str(n)]['ranked_first']}"
                          for n in sizes)
              + f"; {rows[formula]['distinct_per_cpu_s']:.3f} distinct valid/CPU-s", flush=True)

    print(f"\n{len(formulas)} held-out formulas, model {args.model}, {args.threads} thread(s)")
    print(f"{'N':>5} {'mean recall':>12} {'lowest found':>13} {'ranked first':>13} {'not in QM9 (mean)':>18}")
    totals = {}
    for n in sizes:
        per = [rows[f][str(n)] for f in formulas]
        totals[n] = {
            "mean_recall": float(np.nanmean([p["recall"] for p in per])),
            "lowest_found": sum(p["lowest_found"] for p in per) / len(per),
            "ranked_first": sum(p["ranked_first"] for p in per) / len(per),
            "not_in_qm9": float(np.mean([p["not_in_qm9"] for p in per])),
        }
        t = totals[n]
        print(f"{n:>5} {t['mean_recall']:>12.1%} {t['lowest_found']:>13.0%} {t['ranked_first']:>13.0%} {t['not_in_qm9']:>18.1f}")
    cpu = sum(rows[f]["search_cpu_s"] for f in formulas)
    distinct = sum(rows[f][str(sizes[-1])]["distinct"] for f in formulas)
    print(f"distinct valid molecules per CPU-second of the search: {distinct / cpu:.3f} ({distinct} in {cpu:.0f} s)")
    summary = {"settings": vars(args), "formulas": rows, "totals": totals, "distinct_per_cpu_s": distinct / cpu}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    print(f"wrote {out}/summary.json and one run per formula")


if __name__ == "__main__":
    main()
