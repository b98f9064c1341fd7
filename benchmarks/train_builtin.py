"""Train the built-in models that ship in ``respmatch/data`` (``--model mp20|perov5|diamond|qm9``).

MP-20 and Perov-5 train on exactly the training side of ``benchmarks/csp.py``'s formula split (so
that the CSP benchmark's held-out formulas stay unseen), with the benchmark's model settings;
diamond on the single diamond-72 cell of the one-shot experiment; qm9 on every QM9 molecule that
``benchmarks/qm9_molecules.py`` does not hold out (its split, seed 0), with that benchmark's
settings (the local model: message passing was less often valid).  The checkpoint keeps its full
training record (every epoch's validation metrics); training resumes with ``--resume``.

    python benchmarks/train_builtin.py mp20 --out benchmarks/out/models/mp20.pt
    python benchmarks/train_builtin.py mp20 --out benchmarks/out/models/mp20.pt --ship   # -> respmatch/data

``--ship`` (no training) copies the best checkpoint into the package with the space-group prior
of its training crystals (``search.symmetric.space_group_counts``) and the recipe in its record.
A run still in progress ships its best epoch so far (from its training state), and the record's
``recipe.status`` says so.

**Across sessions (qm9).**  An epoch of all of QM9 takes tens of minutes on one core, so the
state is also written every ``--state-every`` seconds within an epoch.  By default a run keeps
its model and state in ``benchmarks/state/NAME.pt`` and ``NAME.pt.state``; the state (under
1 MB) is not ignored by git, so committing it carries the run to a fresh machine:

    nice -n 19 python benchmarks/train_builtin.py qm9 --resume > benchmarks/out/qm9-train.log 2>&1 &
    git add benchmarks/state/qm9.pt.state && git commit -m "qm9: training state after N epochs"
    python benchmarks/train_builtin.py qm9 --status    # epochs so far, and how far the current one got
    python benchmarks/train_builtin.py qm9 --ship      # the best epoch so far -> respmatch/data/qm9.pt
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

import respmatch
from respmatch.builtin import DATA
from respmatch.model.checkpoint import atomic_save, load_checkpoint
from respmatch.search.symmetric import space_group_counts
from respmatch.train import TrainConfig, load_state, save_best

sys.path.insert(0, str(Path(__file__).parent))
# The benchmarks' splits and settings, one definition each.
from csp import MODEL_OPTIONS, load_split  # noqa: E402
from qm7_molecules import TRAIN_DEFAULTS  # noqa: E402
from qm9_molecules import HELD_OUT_FRACTION, read_qm9, split  # noqa: E402

STATE = Path(__file__).parent / "state"  # runs' models (ignored) and training states (committed)
RECIPES = {  # what the shipped models were trained with (docs/results.md, "Shipped models")
    "mp20": {"dataset": "mp_20", "copies_per_structure": 3, "batch_size": 32, "learning_rate": 3e-3},
    "perov5": {"dataset": "perov_5", "copies_per_structure": 4, "batch_size": 32, "learning_rate": 3e-3},
    "diamond": {"copies_per_structure": None, "batch_size": 4, "learning_rate": 1e-2},
    # benchmarks/qm9_molecules.py's training settings (docs/results.md, "QM9 against EDM and GeoLDM")
    "qm9": {"dataset": "qm9", "held_out_fraction": HELD_OUT_FRACTION, "split_seed": 0,
            "copies_per_structure": 2, "batch_size": 16, "learning_rate": 1e-2, **TRAIN_DEFAULTS},
}


def training_data(name: str, recipe: dict, data_dir: Path):
    """(structures, label configuration, model options) of a recipe."""
    if name == "diamond":
        return respmatch.read_structures(data_dir / "diamond" / "diamond-72.xyz"), None, {}
    if name == "qm9":
        pool, _ = split(read_qm9(), recipe["held_out_fraction"], recipe["split_seed"])
        return pool, respmatch.label_preset("molecule", copies_per_structure=recipe["copies_per_structure"]), {}
    structures, _, _ = load_split(SimpleNamespace(data_dir=data_dir, dataset=recipe["dataset"], seed=0))
    labels = respmatch.label_preset("crystal", copies_per_structure=recipe["copies_per_structure"])
    return structures, labels, dict(MODEL_OPTIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, help="the model file (default benchmarks/state/NAME.pt)")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--early-stop-patience", type=int, default=8)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--copies-per-structure", type=int)
    parser.add_argument("--model-option", action="append", default=[], help="KEY=VALUE, e.g. cutoff=5.0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--state-every", type=float, default=600.0,
                        help="seconds between training states written within an epoch")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ship", action="store_true", help="copy the trained model into respmatch/data")
    parser.add_argument("--status", action="store_true", help="print the run's progress from its training state")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPES[args.name])
    if args.copies_per_structure:
        recipe["copies_per_structure"] = args.copies_per_structure
    args.out = args.out or STATE / f"{args.name}.pt"
    if args.status:
        return status(args.out.with_name(args.out.name + ".state"))
    if args.ship:
        return ship(args.name, args.out, recipe, args.data_dir)
    structures, labels, options = training_data(args.name, recipe, args.data_dir)
    for pair in args.model_option:
        key, _, value = pair.partition("=")
        options[key] = type(options.get(key, 0.0))(value)
    config = TrainConfig(epochs=args.epochs, batch_size=recipe["batch_size"],
                         learning_rate=args.learning_rate or recipe["learning_rate"],
                         early_stop_patience=args.early_stop_patience,
                         noise_weighting=recipe.get("noise_weighting", "uniform"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{args.name}: {len(structures)} structures, {config}, labels {recipe}, model {options}", flush=True)
    result = respmatch.train(structures, args.out, label_config=labels, model_options=options or None,
                             config=config, resume=args.resume, progress=False, state_every=args.state_every)
    best = result.best
    print(f"best epoch {best['epoch']} of {len(result.history)}: val force RMSE {best['val_forces_rmse']:.4f} eV/Å"
          + (f", stress RMSE {best['val_stress_rmse']:.4f} eV/Å³" if "val_stress_rmse" in best else ""))


def status(state_path: Path) -> None:
    """Every finished epoch's validation figures, and the steps of the epoch in progress."""
    state = load_state(state_path)
    print(f"{state_path}: untrained val force RMSE {state['initial']['forces_rmse']:.4f} eV/Å")
    for h in state["history"]:
        print(f"epoch {h['epoch']}: val force RMSE {h['val_forces_rmse']:.4f} eV/Å, loss {h['val_loss']:.5f}, "
              f"lr {h['lr']:.1e}, {h['seconds']:.0f} s")
    partial = state.get("partial")
    if partial:
        copies, batch = state["label_config"]["copies_per_structure"], state["meta"]["train_config"]["batch_size"]
        total = f" of {math.ceil(state['meta']['n_train'] * copies / batch)}" if copies else ""
        print(f"epoch {partial['epoch']}: {partial['steps']}{total} steps in {partial['seconds']:.0f} s so far")


def ship(name: str, trained: Path, recipe: dict, data_dir: Path) -> None:
    """The best checkpoint of a training run, with its prior and recipe, as a built-in model."""
    state = trained.with_name(trained.name + ".state")
    if state.exists() and (not trained.exists() or state.stat().st_mtime > trained.stat().st_mtime):
        save_best(state, trained)  # a run in progress: its best epoch so far
    checkpoint = load_checkpoint(trained)
    training = checkpoint["training"]
    if training.get("preset") == "crystal" and not training.get("space_groups"):
        # runs started before train() kept it
        training["space_groups"] = space_group_counts(training_data(name, recipe, data_dir)[0])
    history, best, config = training.get("history", []), training["best"], training["train_config"]
    if len(history) >= config["epochs"] or len(history) - best["epoch"] > config["early_stop_patience"]:
        status = f"finished: {len(history)} epochs, best {best['epoch']}"
    else:
        status = (f"in progress: {len(history)} epochs so far, best {best['epoch']}; "
                  f"continued by benchmarks/train_builtin.py {name} --resume")
    training["recipe"] = {**recipe, "script": "benchmarks/train_builtin.py", "status": status}
    print(f"{name}: {status} (val force RMSE {best['val_forces_rmse']:.4f} eV/Å), "
          f"{len(training.get('space_groups', {}))} cell sizes in the prior")
    atomic_save(checkpoint, DATA / f"{name}.pt")
    print(f"-> {DATA / f'{name}.pt'}")


if __name__ == "__main__":
    main()
