"""Pretrained models shipped inside the package, so that ``--model mp20`` needs no training.

``benchmarks/train_builtin.py`` made them (docs/results.md, "Shipped models"); each checkpoint
keeps its own training record (every epoch's validation metrics), which ``respmatch info``
shows.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path(__file__).parent / "data"
BUILTIN_MODELS = {
    "mp20": "MP-20 crystals: train_partial.csv and the formulas of val.csv that benchmarks/csp.py "
    "does not hold out; cutoff 4 Å, l_max = ν_max = 2",
    "perov5": "Perov-5 perovskites: the formulas of val.csv that benchmarks/csp.py does not hold out; "
    "cutoff 4 Å, l_max = ν_max = 2",
    "diamond": "one 72-atom cubic-diamond cell (the paper's one-shot carbon experiment)",
    "qm9": "QM9 molecules: the 90% that benchmarks/qm9_molecules.py does not hold out (seed 0); "
    "the local model, cutoff 4.5 Å; the best of 15 epochs (early stopping)",
}


def model_path(model: str | os.PathLike) -> Path:
    """The checkpoint a ``--model`` argument names: a file, or else a built-in model's name."""
    path = Path(model)
    if path.is_file() or str(model) not in BUILTIN_MODELS:
        if not path.is_file() and len(path.parts) == 1 and not path.suffix:
            raise FileNotFoundError(
                f"{model}: no such model file, and no built-in model of that name "
                f"(built-in: {', '.join(sorted(BUILTIN_MODELS))})"
            )
        return path
    return DATA / f"{model}.pt"
