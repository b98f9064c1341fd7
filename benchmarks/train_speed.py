"""Training speed on the one-diamond task (72-atom cell, 121 labelled copies per epoch).

Prints three tables:
1. seconds per epoch on 1 and 2 threads, for respmatch's neighbour sum (batched matrix product)
   and for the straightforward sum of the (edges × channels × monomials) outer product,
   measured in this run, with their ratio;
2. the whole training to a converged validation force RMSE (early stopping), wall time on 2 threads;
3. optionally (--reference-epochs N) a long run with the paper's batch size of 2, as the
   "converged" reference that the fast run must equal.

    python benchmarks/train_speed.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from respmatch import read_structures
from respmatch.model.denoiser import NeighbourSum
from respmatch.train import TrainConfig, train


def outer_product_neighbour_sum(weights, angular):
    """Baseline: A[i] = Σ_slots w ⊗ Y, forming the full per-edge outer product, then summing."""
    return (weights[:, None] * angular[None]).sum(-1).permute(2, 0, 1)


def neighbour_sum(kind: str):
    """The model's neighbour sum ("bmm") or the baseline ("outer"), for the duration of a block."""
    if kind == "outer":
        return mock.patch.object(NeighbourSum, "apply", outer_product_neighbour_sum)
    return contextlib.nullcontext()


def run(structures, config: TrainConfig, workdir: Path, name: str):
    started = time.perf_counter()
    result = train(structures, workdir / f"{name}.pt", config=config, progress=False)
    return result, time.perf_counter() - started


def time_to(result, target) -> str:
    """Summed epoch time until the validation force RMSE first reaches ``target``."""
    if target is None:
        return "-"
    elapsed = 0.0
    for record in result.history:
        elapsed += record["seconds"]
        if record["val_forces_rmse"] <= target:
            return f"{elapsed:.0f} s (epoch {record['epoch']})"
    return "not reached"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--timing-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--reference-epochs", type=int, default=0)
    args = parser.parse_args()

    structures = read_structures(Path(args.data_dir) / "diamond" / "diamond-72.xyz")
    workdir = Path(tempfile.mkdtemp(prefix="respmatch-train-speed-"))

    print(f"## Seconds per epoch (121 copies of the 72-atom cell, batch {args.batch_size})")
    print("| threads | outer-product baseline | respmatch (bmm) | speed-up |")
    print("|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        seconds = {}
        for kind in ("outer", "bmm"):
            with neighbour_sum(kind):
                config = TrainConfig(epochs=args.timing_epochs, batch_size=args.batch_size)
                result, _ = run(structures, config, workdir, f"timing-{kind}-{threads}")
            # The first epoch includes one-off allocations: time the rest.
            laps = [h["seconds"] for h in result.history[1:]] or [result.history[0]["seconds"]]
            seconds[kind] = sum(laps) / len(laps)
        print(
            f"| {threads} | {seconds['outer']:.2f} s | {seconds['bmm']:.2f} s "
            f"| {seconds['outer'] / seconds['bmm']:.2f}× |"
        )

    torch.set_num_threads(2)
    config = TrainConfig(epochs=args.max_epochs, batch_size=args.batch_size)
    fast, wall = run(structures, config, workdir, "fast")
    rows = [(f"respmatch defaults, --epochs {args.max_epochs}", fast, wall)]
    if args.reference_epochs:
        # The paper's batch size and plateau schedule, run for a fixed number of epochs.
        reference_config = TrainConfig(
            epochs=args.reference_epochs, batch_size=2, plateau_factor=0.8, plateau_patience=10,
            early_stop_patience=args.reference_epochs,
        )
        reference, reference_wall = run(structures, reference_config, workdir, "reference")
        rows.append((f"reference, batch 2, {args.reference_epochs} epochs", reference, reference_wall))

    print("\n## Whole training on 2 threads (validation: 121 fresh-noise copies, EMA weights)")
    target = min(result.best["val_forces_rmse"] for _, result, _ in rows[1:]) if len(rows) > 1 else None
    print("| run | epochs | best epoch | wall time | val force RMSE (eV/Å) | val stress RMSE (eV/Å³) | epoch time to reach the reference RMSE |")
    print("|---|---|---|---|---|---|---|")
    for name, result, seconds in rows:
        best = result.best
        print(
            f"| {name} | {len(result.history)} | {best['epoch']} | {seconds:.0f} s "
            f"| {best['val_forces_rmse']:.4f} | {best['val_stress_rmse']:.4f} | {time_to(result, target)} |"
        )
    print(
        f"\ninitial (untrained) val force RMSE {fast.initial['forces_rmse']:.4f} eV/Å; "
        f"models in {workdir}"
    )


if __name__ == "__main__":
    main()
