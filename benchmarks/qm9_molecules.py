"""QM9 side by side with diffusion models: train on part of QM9, search held-out compositions,
report EDM's metrics (as EDM computes them) beside ours.

1. Read QM9 from the ``qm9pack`` package (130,831 molecules; ``pip install -e ".[benchmarks]"``),
   split it with a seed: --held-out-fraction of the molecules are never trained on.
2. Train on --train-molecules molecules of the rest, or reuse a model with --model; ``--model
   qm9`` is the built-in model, trained on all of the rest by ``benchmarks/train_builtin.py``.
3. Draw --tries held-out molecules (seeded) and relax one random start of each one's composition
   (the paper's molecule protocol, docs/design.md §1.3), all through one shared batch.
4. Report, over all tries: EDM's atom and molecule stability, RDKit validity and uniqueness
   (respmatch.evaluate.edm), our strict and lenient validity, uniqueness, novelty against the
   training molecules (meaningful only when this run trained the model) and against all of QM9,
   and valid-unique molecules per second; with the
   published EDM and GeoLDM figures.  The held-out molecules themselves are scored with EDM's
   metrics too, as a check of the metric code (EDM reports 99.0% / 95.2% for QM9's data).

Unlike EDM and GeoLDM, which sample the number of atoms and the atom types, we are given each
composition (drawn from held-out molecules); the figures compare geometry and bonding only.

Writes OUT/model.pt, OUT/generated.extxyz, OUT/evaluation.json and OUT/summary.json.

    python benchmarks/qm9_molecules.py --quick          # smoke run, a few minutes
    python benchmarks/qm9_molecules.py                  # the benchmark (see the defaults)
    python benchmarks/qm9_molecules.py --model qm9 --tries 2000 --out-dir benchmarks/out/qm9-builtin
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from ase import Atoms
from ase.io import write
from rdkit import Chem
from rdkit.rdBase import BlockLogs

import respmatch
from qm7_molecules import SEARCH_DEFAULTS, percent, train_model
from respmatch.cli import _key_values
from respmatch.evaluate.edm import PUBLISHED, edm_metrics
from respmatch.evaluate.molecules import evaluate_molecules
from respmatch.search.generate import search_compositions

# QM9 molecules have up to 9 heavy atoms and 29 atoms in all (QM7: 7 and 23): a box a little
# larger than the QM7 benchmark's 6×4×4 Å, so that no atom starts beyond the cutoff from all others.
QM9_SEARCH_DEFAULTS = {**SEARCH_DEFAULTS, "box": [7.0, 4.5, 4.5]}
HELD_OUT_FRACTION = 0.1  # of QM9's molecules, never trained on (the built-in qm9 model too)
QUICK = {"epochs": 2, "train_molecules": 200, "tries": 24}
QUICK_STAGES = {"relax.max_steps": 100, "kick-relax.max_steps": 100}


def read_qm9() -> list[Atoms]:
    """All QM9 molecules shipped by qm9pack; ``info``: QM9 index, the data set's SMILES and U0
    (internal energy at 0 K, hartree).

    Read from the package's csv files directly, only the five columns needed:
    ``qm9pack.get_data()`` parses every column (frequencies, Mulliken charges) of 230 MB, and
    importing qm9pack needs ``pkg_resources``, which recent setuptools no longer ship; the
    package is located without importing it.
    """
    spec = importlib.util.find_spec("qm9pack")
    if spec is None:
        raise SystemExit('QM9 needs the qm9pack package: pip install -e ".[benchmarks]"')
    folder = Path(spec.submodule_search_locations[0]) / "data"
    columns = ["Index", "SMILES", "Elements", "XYZ_Ang", "InternalEnergy_0K_au"]
    frame = pd.concat(
        [pd.read_csv(folder / f"qm9_part{k}.csv", usecols=columns) for k in (1, 2, 3)], ignore_index=True
    )
    molecules = []
    for index, smiles, elements, xyz, u0 in frame[columns].itertuples(index=False):
        symbols = json.loads(elements.replace("'", '"'))
        # Not JSON: a few coordinates are written "1." (two linear molecules).
        positions = np.fromstring(xyz.replace("[", "").replace("]", ""), sep=",").reshape(len(symbols), 3)
        info = {"qm9_index": int(index), "smiles": smiles, "u0_hartree": float(u0)}
        molecules.append(Atoms(symbols, positions=positions, info=info))
    return molecules


def split(molecules: list[Atoms], held_out_fraction: float, seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """(training pool, held out), a seeded permutation of all molecules."""
    order = np.random.default_rng(seed).permutation(len(molecules))
    n_held_out = int(round(held_out_fraction * len(molecules)))
    return [molecules[i] for i in order[n_held_out:]], [molecules[i] for i in order[:n_held_out]]


def check_builtin_split(parser: argparse.ArgumentParser, args) -> None:
    """Refuse another split for the built-in model: it would search molecules it trained on."""
    if args.model == "qm9" and (args.held_out_fraction, args.seed) != (HELD_OUT_FRACTION, 0):
        parser.error(f"the built-in qm9 model was trained on the split --held-out-fraction {HELD_OUT_FRACTION} "
                     "--seed 0; another split would search molecules it trained on")


def canonical(smiles: str) -> str | None:
    """The data set's SMILES as our judge writes them: constitution only, hydrogens implicit."""
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--out-dir", default="benchmarks/out/qm9")
    parser.add_argument("--model", help="reuse this trained model (skip training); qm9: the built-in one")
    parser.add_argument("--train-molecules", type=int, default=3000, help="QM9 molecules trained on (not held out)")
    parser.add_argument("--held-out-fraction", type=float, default=HELD_OUT_FRACTION)
    parser.add_argument("--tries", type=int, default=1000, help="held-out molecules whose composition is searched, one try each")
    parser.add_argument("--epochs", type=int, default=25, help="upper bound (early stopping)")
    parser.add_argument("--copies-per-structure", type=int, default=2, help="noise levels per molecule per epoch")
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128, help="structures relaxed at once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                        help="model setting, e.g. message_passing=1 (as respmatch train --model)")
    parser.add_argument("--train-option", action="append", default=[], metavar="KEY=VALUE",
                        help="training setting (as respmatch train --train-option)")
    parser.add_argument("--label-option", action="append", default=[], metavar="KEY=VALUE",
                        help="label setting (as respmatch train --label)")
    parser.add_argument("--search-option", action="append", default=[], metavar="KEY=VALUE",
                        help=f"search setting (as respmatch generate --option); defaults {QM9_SEARCH_DEFAULTS}")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}, short stages")
    args = parser.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    check_builtin_split(parser, args)
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    qm9 = read_qm9()
    pool, held_out = split(qm9, args.held_out_fraction, args.seed)
    # The built-in model trained on the whole pool (its own validation part included).
    training = pool if args.model == "qm9" else pool[: args.train_molecules]
    print(
        f"QM9: {len(qm9)} molecules read in {time.perf_counter() - started:.0f} s; {len(held_out)} held out, "
        f"training on {len(training)} of the other {len(pool)}"
    )
    train_seconds = 0.0
    if args.model:
        model_path = Path(args.model)
    else:
        model_path = out / "model.pt"
        train_seconds = train_model(training, args, model_path)
    model = respmatch.load_model(model_path)

    # A model trained elsewhere (QM7 has no F) searches only compositions of elements it knows.
    held_out = [a for a in held_out if set(a.numbers) <= set(model.config.elements)]
    drawn = np.random.default_rng(args.seed + 1).choice(len(held_out), args.tries, replace=False)
    tries = Counter(held_out[i].get_chemical_formula() for i in sorted(drawn))
    print(f"searching {args.tries} tries over {len(tries)} held-out compositions")
    started = time.perf_counter()
    generated = list(
        search_compositions(
            model,
            dict(tries),
            preset="molecule",
            seed=args.seed,
            batch_size=args.batch_size,
            options={
                **QM9_SEARCH_DEFAULTS,
                **(QUICK_STAGES if args.quick else {}),
                **_key_values(args.search_option, "--search-option"),
            },
        )
    )
    generate_seconds = time.perf_counter() - started
    generated.sort(key=lambda a: (a.info["composition"], a.info["index"]))
    write(out / "generated.extxyz", generated, format="extxyz")

    _quiet = BlockLogs()
    ours = evaluate_molecules(generated, training=training)
    ours.write_json(out / "evaluation.json")
    s = ours.summary
    valid_smiles = {r["smiles"] for r in ours.records if r["strict"]}
    # Only QM9 molecules of a generated formula can share a generated molecule's SMILES.
    in_qm9 = {canonical(a.info["smiles"]) for a in qm9 if a.get_chemical_formula() in tries}
    edm = edm_metrics(generated)
    reference = edm_metrics([held_out[i] for i in drawn])
    summary = {
        "settings": {k: v for k, v in vars(args).items()},
        "train_seconds": train_seconds,
        "generate_seconds": generate_seconds,
        "edm": edm,
        "edm_of_held_out_molecules": reference,
        "ours": s,
        "novel_vs_qm9": len(valid_smiles - in_qm9) / len(valid_smiles) if valid_smiles else float("nan"),
        "valid_unique_per_second": len(valid_smiles) / generate_seconds,
        "published": PUBLISHED,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")

    print()
    print(f"{'':32} {'atom stable':>12} {'mol stable':>11} {'RDKit valid':>12} {'valid+unique':>13}")
    rows = {**{name: {k: v / 100 for k, v in m.items()} for name, m in PUBLISHED.items()},
            "respmatch (this run)": edm, "QM9 held-out molecules (check)": reference}
    for name, m in rows.items():
        print(f"{name:32} {m['atom_stable']:>12.1%} {m['molecule_stable']:>11.1%} "
              f"{m['rdkit_valid']:>12.1%} {m['valid_unique']:>13.1%}")
    print()
    print(
        f"ours: {percent(s['strict_valid'])} strictly valid ({percent(s['lenient_valid'])} lenient) of {s['n']} tries; "
        f"unique {percent(s['unique'])} of valid; novel {percent(s['novel'])} against the training molecules, "
        f"{percent(summary['novel_vs_qm9'])} against all of QM9; converged {percent(s['converged'])}"
    )
    print(
        f"timings ({args.threads} threads): train {train_seconds:.0f} s, generate {generate_seconds:.0f} s "
        f"({len(generated) / generate_seconds:.2f} tries/s, {summary['valid_unique_per_second']:.3f} "
        f"valid-unique molecules/s)"
    )
    print(f"wrote {out}/generated.extxyz, evaluation.json, summary.json")


if __name__ == "__main__":
    main()
