"""Train the built-in models that ship in ``respmatch/data`` (``--model mp20|perov5|diamond``).

MP-20 and Perov-5 train on exactly the training side of ``benchmarks/csp.py``'s formula split (so
that the CSP benchmark's held-out formulas stay unseen), with the benchmark's model settings;
diamond on the single diamond-72 cell of the one-shot experiment.  The checkpoint keeps its full
training record (every epoch's validation metrics); training resumes with ``--resume``.

    python benchmarks/train_builtin.py mp20 --out benchmarks/out/models/mp20.pt
    python benchmarks/train_builtin.py mp20 --out benchmarks/out/models/mp20.pt --ship   # -> respmatch/data

``--ship`` (no training) copies the best checkpoint into the package with the space-group prior
of its training crystals (``search.symmetric.space_group_counts``) and the recipe in its record.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

import respmatch
from respmatch.builtin import DATA
from respmatch.model.checkpoint import atomic_save, load_checkpoint
from respmatch.search.symmetric import space_group_counts
from respmatch.train import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from csp import MODEL_OPTIONS, load_split  # noqa: E402  (the benchmark's split, one definition)

RECIPES = {  # what the shipped models were trained with (docs/results.md, "Shipped models")
    "mp20": {"dataset": "mp_20", "copies_per_structure": 3, "batch_size": 32, "learning_rate": 3e-3},
    "perov5": {"dataset": "perov_5", "copies_per_structure": 4, "batch_size": 32, "learning_rate": 3e-3},
    "diamond": {"copies_per_structure": None, "batch_size": 4, "learning_rate": 1e-2},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("name", choices=sorted(RECIPES))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--early-stop-patience", type=int, default=8)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--copies-per-structure", type=int)
    parser.add_argument("--model-option", action="append", default=[], help="KEY=VALUE, e.g. cutoff=5.0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--ship", action="store_true", help="copy the trained model into respmatch/data")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPES[args.name])
    if args.copies_per_structure:
        recipe["copies_per_structure"] = args.copies_per_structure
    if args.name == "diamond":
        structures, labels, options = respmatch.read_structures(args.data_dir / "diamond" / "diamond-72.xyz"), None, {}
    else:
        structures, _, _ = load_split(SimpleNamespace(data_dir=args.data_dir, dataset=recipe["dataset"], seed=0))
        labels = respmatch.label_preset("crystal", copies_per_structure=recipe["copies_per_structure"])
        options = dict(MODEL_OPTIONS)
    for pair in args.model_option:
        key, _, value = pair.partition("=")
        options[key] = type(options.get(key, 0.0))(value)
    if args.ship:
        return ship(args.name, args.out, structures, recipe)
    config = TrainConfig(epochs=args.epochs, batch_size=recipe["batch_size"],
                         learning_rate=args.learning_rate or recipe["learning_rate"],
                         early_stop_patience=args.early_stop_patience)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{args.name}: {len(structures)} structures, {config}, labels {recipe}, model {options}", flush=True)
    result = respmatch.train(structures, args.out, label_config=labels, model_options=options or None,
                             config=config, resume=args.resume, progress=False)
    best = result.best
    print(f"best epoch {best['epoch']} of {len(result.history)}: val force RMSE {best['val_forces_rmse']:.4f} eV/Å"
          + (f", stress RMSE {best['val_stress_rmse']:.4f} eV/Å³" if "val_stress_rmse" in best else ""))


def ship(name: str, trained: Path, structures, recipe: dict) -> None:
    """The best checkpoint of a training run, with its prior and recipe, as a built-in model."""
    checkpoint = load_checkpoint(trained)
    training = checkpoint["training"]
    if training.get("preset") == "crystal" and not training.get("space_groups"):
        training["space_groups"] = space_group_counts(structures)  # runs started before train() kept it
    training["recipe"] = {**recipe, "script": "benchmarks/train_builtin.py"}
    history = training.get("history", [])
    print(f"{name}: {len(history)} epochs, best {training['best']['epoch']} "
          f"(val force RMSE {training['best']['val_forces_rmse']:.4f} eV/Å), "
          f"{len(training.get('space_groups', {}))} cell sizes in the prior")
    atomic_save(checkpoint, DATA / f"{name}.pt")
    print(f"-> {DATA / f'{name}.pt'}")


if __name__ == "__main__":
    main()
