"""Crystal structure prediction (CSP) on MP-20 or Perov-5, at CPU scale (docs/design.md §1.3-1.4).

The official test splits are not in the shared data, so formulas are held out instead: MP-20
trains on train_partial.csv plus about 90% of the formulas of val.csv, Perov-5 on about 90% of
the formulas of its val.csv; no held-out formula has a training structure.  For each of the
first --held-out held-out formulas (seeded order) the search relaxes --tries random cells of the
composition of its first held-out structure, and the tries are matched to all held-out
structures of that formula (StructureMatcher stol=0.5, ltol=0.3, angle_tol=10): match rate of
the lowest-Ẽ try (1 try) and of any try (k tries), RMSE of matched sites.  MP-20 also generates
30 tries for each of the paper's 15 compositions.

    python benchmarks/csp.py --dataset mp_20
    python benchmarks/csp.py --dataset perov_5
    python benchmarks/csp.py --dataset mp_20 --quick      # smoke test, about a minute
    python benchmarks/csp.py --dataset mp_20 --model M.pt --recheck --recheck-top 5
    python benchmarks/csp.py --dataset mp_20 --model mp20 --predict --tries 100 --baseline plain-uMLIP

``--recheck`` judges the held-out tries with a physical potential (default SevenNet-0, single
points of every try; ``--recheck-relax`` relaxes them): Spearman ρ(Ẽ, E_phys), energy above the
lowest found per formula (held-out structures checked by the same potential included), and the
match rate of the lowest-physical-energy try beside the lowest-Ẽ one.

``--predict`` runs ``respmatch predict`` (search → distinct → shortlist → physics → ranking) on the
held-out formulas instead, with ``--tries`` M; ``--baseline plain-uMLIP`` relaxes the same starts
directly with the potential on the same CPU budget (benchmarks/predict_step.py).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import ase.io
import numpy as np
import torch
from pymatgen.core import Composition

import respmatch
from respmatch.evaluate.crystals import evaluate_crystals
from respmatch.evaluate.plots import plot_group_bars
from respmatch.cli import add_cluster_options
from respmatch.cluster import dask_client
from respmatch.search.generate import search_compositions
from respmatch.search.starts import composition_volume, parse_composition
from respmatch.train import TrainConfig

import predict_step
import recheck_step

OUT = Path(__file__).parent / "out"
HELD_OUT_FRACTION = 0.1  # of the formulas of val.csv
COMMON = {"held_out": 100, "tries": 20}
# Sized for a 2-core CPU: an epoch took ~21 s on MP-20 (9977 structures × 3 copies) and ~5.5 s
# on Perov-5 (3405 × 4), on one thread of a busy machine, so training is ≲15 min / ≲5 min
# (early stopping may end it sooner).  The search is cheap by comparison: 2000 tries ≈ 35-45 s.
DEFAULTS = {
    "mp_20": {"epochs": 12, "copies_per_structure": 3, "batch_size": 32},  # ~7 min on 2 cores
    "perov_5": {"epochs": 25, "copies_per_structure": 4, "batch_size": 32},  # ~3 min
}
QUICK = {"epochs": 2, "copies_per_structure": 1, "batch_size": 32, "held_out": 4, "tries": 3,
         "paper_tries": 2, "train_structures": 300, "max_steps": (20, 60)}
MODEL_OPTIONS = {"cutoff": 4.0, "l_max": 2, "nu_max": 2}  # the paper's MP-20 model, for both sets
PAPER_COMPOSITIONS = ("Co2Sb2", "Sr2O4", "AlAg4", "YMg3", "Cr4Si4", "Sn4Pd4", "Ag6O2", "Co4B2",
                      "Ba2Cd6", "Bi2F8", "KZnF3", "Cr3CuO8", "Bi4S4Cl4", "Si2C4N8", "Hg2S2O8")
PAPER_TRIES = 30
PUBLISHED_MP20 = (  # official MP-20 test split (9046 structures), models trained on 27k crystals
    "DiffCSP 51.5% (1 try) / 77.9% (20 tries); CDVAE 33.9% / 67.0%; FlowMM 61.4% (1 try)"
)


def reduced_formula(atoms) -> str:
    return Composition(atoms.get_chemical_formula()).reduced_formula


def by_formula(structures) -> dict[str, list]:
    groups = defaultdict(list)
    for atoms in structures:
        groups[reduced_formula(atoms)].append(atoms)
    return dict(groups)


def formula_split(structures, keep: set[str], seed: int):
    """Training structures and {held-out formula: structures}, the formulas in seeded order.

    Formulas in ``keep`` (already in the training data) are never held out."""
    groups = by_formula(structures)
    candidates = [f for f in groups if f not in keep]
    n_held = round(HELD_OUT_FRACTION * len(groups))
    order = np.random.default_rng(seed).permutation(len(candidates))[:n_held]
    held = {candidates[i]: groups[candidates[i]] for i in order}
    train = [atoms for f, members in groups.items() if f not in held for atoms in members]
    return train, held


def load_split(args):
    data = Path(args.data_dir) / args.dataset
    if args.dataset == "mp_20":
        partial = respmatch.read_structures(data / "train_partial.csv")
        val = respmatch.read_structures(data / "val.csv")
        val_train, held = formula_split(val, set(by_formula(partial)), args.seed)
        print(f"train_partial.csv: {len(partial)} structures; val.csv: {len(val)} structures, "
              f"{len(val_train)} of them to training")
        return partial + val_train, held, partial + val
    val = respmatch.read_structures(data / "val.csv")
    train, held = formula_split(val, set(), args.seed)
    print(f"val.csv: {len(val)} structures, {len(train)} of them to training")
    return train, held, val


def train_model(args, train):
    if args.model:
        model = respmatch.load_model(args.model)
        meta = model.checkpoint.get("training", {})
        print(f"model {args.model} (trained on {meta.get('n_structures', '?')} structures), no training")
        return model, {"model": args.model}
    if args.quick:
        subset = np.random.default_rng(args.seed).permutation(len(train))[: QUICK["train_structures"]]
        train = [train[i] for i in subset]
    path = args.out_dir / "model.pt"
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    labels = respmatch.label_preset("crystal", copies_per_structure=args.copies_per_structure)
    print(f"training on {len(train)} structures: {args.epochs} epochs at most, "
          f"{args.copies_per_structure} labelled copies per structure per epoch, batch {args.batch_size}, "
          f"model {MODEL_OPTIONS}")
    started = time.perf_counter()
    result = respmatch.train(train, path, preset="crystal", label_config=labels, config=config,
                             model_options=MODEL_OPTIONS)
    seconds = time.perf_counter() - started
    best = result.best
    print(f"training: {seconds:.0f} s, {len(result.history)} epochs, best epoch {best['epoch']}: "
          f"validation force RMSE {best['val_forces_rmse']:.4f} eV/Å, stress RMSE {best['val_stress_rmse']:.4f} eV/Å³ "
          f"(untrained: {result.initial['forces_rmse']:.4f} eV/Å) -> {path}")
    meta = {"model": str(path), "seconds": seconds, "epochs_run": len(result.history), "best_epoch": best["epoch"],
            "val_forces_rmse": best["val_forces_rmse"], "val_stress_rmse": best["val_stress_rmse"]}
    return result.model, meta


def search(model, tries: dict[str, int], args, what: str):
    started = time.perf_counter()
    with dask_client(args.workers, args.scheduler) as client:  # none: search here
        generated = list(search_compositions(model, tries, preset="crystal", seed=args.seed,
                                             batch_size=args.search_batch_size, options=args.options,
                                             client=client))
    seconds = time.perf_counter() - started
    order = list(tries)  # structures come back as they finish: put them in request order
    generated.sort(key=lambda a: (order.index(a.info["composition"]), a.info["index"]))
    converged = sum(bool(a.info["converged"]) for a in generated)
    print(f"{what}: {len(generated)} structures of {len(tries)} compositions in {seconds:.0f} s "
          f"({len(generated) / seconds:.2f} structures/s), {converged / len(generated):.0%} converged")
    return generated, {"structures": len(generated), "seconds": seconds,
                       "structures_per_second": len(generated) / seconds, "converged": converged / len(generated)}


def headline(evaluation, tries: int) -> str:
    s = evaluation.summary
    distinct = sum(g["distinct"] for g in evaluation.groups.values()) / len(evaluation.groups)
    return (f"match rate over {s['with_reference']} formulas: lowest-Ẽ try {s['match_rate_lowest']:.1%} "
            f"(RMSE {s['rmse_lowest']:.4f}), any of {tries} tries {s['match_rate_any']:.1%} "
            f"(RMSE {s['rmse_any']:.4f}); valid {s['valid']:.1%}, unique {s['unique']:.1%}\n"
            f"ranked budget (converged tries grouped into distinct structures, ranked by Ẽ): lowest-Ẽ "
            f"distinct structure {s['match_rate_top1']:.1%} (RMSE {s['rmse_top1']:.4f}), "
            f"{s['keep']} lowest {s['match_rate_topk']:.1%} (RMSE {s['rmse_topk']:.4f}); "
            f"{distinct:.1f} distinct structures per formula")


def searchable(model, numbers) -> bool:
    """Whether the search can size a cell for these atoms: every element seen in training and a
    total fitted volume above zero (one element may have none: the non-negative fit can give its
    share to the partners it always comes with)."""
    volumes = dict(zip(model.config.elements, model.element_volumes.tolist()))
    try:
        composition_volume(numbers, volumes)
    except ValueError:
        return False
    return True


def paper_compositions(model, everything, train, args, meta):
    """The paper's 15 MP-20 compositions; evaluated against any csv row of the same formula."""
    usable, skipped = [], []
    for composition in PAPER_COMPOSITIONS:
        (usable if searchable(model, parse_composition(composition)) else skipped).append(composition)
    if skipped:
        print(f"paper compositions skipped (an element the model lacks, or no fitted volume in all): "
              f"{', '.join(skipped)}")
    tries = QUICK["paper_tries"] if args.quick else PAPER_TRIES
    generated, meta["paper15_generation"] = search(model, dict.fromkeys(usable, tries), args, "paper compositions")
    path = args.paper15_out or (args.out_dir if args.quick else OUT) / "mp20_paper15.extxyz"
    ase.io.write(path, generated, format="extxyz")
    print(f"-> {path}")
    wanted = {reduced_formula(a) for a in generated}
    reference = [a for a in everything if reduced_formula(a) in wanted]
    if not reference:
        print("no reference for any paper composition in the csv files")
        return
    in_training = sorted({reduced_formula(a) for a in train} & wanted)
    evaluation = evaluate_crystals(generated, reference=reference, training=train)
    evaluation.write_json(args.out_dir / "paper15_evaluation.json")
    print(f"\n## Paper compositions with a reference in the csv files "
          f"(in our training data, so not a prediction test: {', '.join(in_training) or 'none'})")
    print(evaluation.table())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DEFAULTS), default="mp_20")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--out-dir", type=Path, help="default: benchmarks/out/DATASET (-quick)")
    parser.add_argument("--held-out", type=int, help="held-out formulas to evaluate (default 100)")
    parser.add_argument("--tries", type=int, help="tries per held-out formula (default 20)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--copies-per-structure", type=int)
    parser.add_argument("--batch-size", type=int, help="training batch (labelled copies)")
    parser.add_argument("--search-batch-size", type=int, default=256, help="structures relaxed at once")
    parser.add_argument("--max-steps", type=int, nargs=2, metavar=("CONSTANT_VOLUME", "FULL_CELL"),
                        help="cap the two relaxation stages (preset: 100 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", help="a trained model: skip training")
    parser.add_argument("--symmetry", type=float, default=0.0, help="share of symmetric (pyxtal) starts")
    parser.add_argument("--space-groups", default="prior", help="groups of symmetric starts (default: prior)")
    parser.add_argument("--keep-symmetry", action="store_true", help="symmetry-preserving relaxation")
    parser.add_argument("--keep", type=int, default=20, help="distinct structures ranked per formula (K)")
    parser.add_argument("--skip-paper15", action="store_true", help="only the held-out formulas")
    parser.add_argument("--paper15-out", type=Path, help="default: benchmarks/out/mp20_paper15.extxyz")
    parser.add_argument("--quick", action="store_true", help="tiny smoke settings")
    add_cluster_options(parser)
    recheck_step.add_options(parser, "sevennet-0", top=None, relax=False)
    predict_step.add_options(parser)
    args = parser.parse_args()
    settings = {**COMMON, **DEFAULTS[args.dataset], **(QUICK if args.quick else {})}
    for key, value in settings.items():
        if getattr(args, key, "absent") is None:  # not given on the command line
            setattr(args, key, value)
    args.out_dir = args.out_dir or OUT / (args.dataset + ("-quick" if args.quick else ""))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.options = (
        {"constant-volume.max_steps": args.max_steps[0], "full-cell.max_steps": args.max_steps[1]}
        if args.max_steps else {}
    )
    if args.symmetry:
        args.options.update(symmetry=args.symmetry, space_groups=args.space_groups, keep_symmetry=args.keep_symmetry)
    torch.set_num_threads(args.threads)
    print(f"# CSP benchmark, {args.dataset}{' (quick)' if args.quick else ''}, seed {args.seed}, "
          f"{args.threads} threads")

    train, held, everything = load_split(args)
    model, meta = train_model(args, train)
    usable = {f: s for f, s in held.items() if searchable(model, s[0].numbers.tolist())}
    chosen = dict(list(usable.items())[: args.held_out])
    print(f"split: {len(train)} training structures ({len(by_formula(train))} formulas); "
          f"{len(held)} held-out formulas ({sum(map(len, held.values()))} structures), "
          f"{len(held) - len(usable)} dropped (an element not in training, or no fitted volume in all), "
          f"{len(chosen)} evaluated")
    meta.update(dataset=args.dataset, seed=args.seed, quick=args.quick, train_structures=len(train),
                held_out_formulas=len(held), dropped_formulas=len(held) - len(usable), evaluated=len(chosen),
                tries=args.tries, stage_caps=args.max_steps or "preset (100, 2000)", keep=args.keep,
                symmetry=args.symmetry, space_groups=args.space_groups if args.symmetry else None,
                keep_symmetry=args.keep_symmetry)
    print(f"relaxation stage caps: {meta['stage_caps']}")
    if args.predict:  # the funnel makes its own tries
        meta["predict"] = predict_step.run(args.model or model, chosen, args.out_dir, args)
        (args.out_dir / "run.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
        return

    tries = {structures[0].get_chemical_formula(): args.tries for structures in chosen.values()}
    generated, meta["generation"] = search(model, tries, args, "held-out formulas")
    ase.io.write(args.out_dir / "generated.extxyz", generated, format="extxyz")

    started = time.perf_counter()
    reference = [atoms for structures in chosen.values() for atoms in structures]
    evaluation = evaluate_crystals(generated, reference=reference, keep=args.keep)
    meta["evaluation_seconds"] = time.perf_counter() - started
    evaluation.write_json(args.out_dir / "evaluation.json")
    plot_group_bars(evaluation, ["matched_lowest", "matched_any"], args.out_dir / "match_rate.png", "matched")
    print(f"evaluation: {meta['evaluation_seconds']:.0f} s\n")
    print(evaluation.table())
    print(f"\n{headline(evaluation, args.tries)}")
    if args.dataset == "mp_20":
        print(f"published, for scale only: {PUBLISHED_MP20}. Ours is a different split (held-out val "
              f"formulas) with far less training data ({len(train)} structures) and CPU-sized training.")
    else:
        print("published Perov-5 figures are for its official test split; ours is a held-out formula split of val.")

    meta["summary"] = evaluation.summary
    if args.recheck:
        summary, checked = recheck_step.run(generated, args.out_dir, args, "crystal", reference=reference)
        meta["recheck"] = {**summary, **{k: v for k, v in checked.summary.items() if k not in evaluation.summary}}
    if args.dataset == "mp_20" and not args.skip_paper15:
        paper_compositions(model, everything, train, args, meta)
    (args.out_dir / "run.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"\nwrote {args.out_dir}/: evaluation.json, run.json, generated.extxyz, match_rate.png")


if __name__ == "__main__":
    main()
