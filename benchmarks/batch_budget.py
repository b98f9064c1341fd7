"""Which batch a CPU search should run: structures per second against the batch's atom budget.

Relaxes the same ``--n`` starts of one composition (what ``respmatch generate`` makes for
indices 0..n-1, its default preset) with the batched relaxer, once per setting: a fixed count of
structures (``--counts``, the atom budget left at its default) and batches sized by atoms alone
(``--budgets``, no count limit, as ``--batch-size auto``).  The settings run in turn, so a shared
machine slows them alike; model loading and starts are not timed, and neither is the store.

    python benchmarks/batch_budget.py --model diamond --composition C8 --volume-per-atom 5 --n 512 \\
        --counts 64 256 --budgets 1024 2048 4096 8192 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import respmatch
from respmatch.builtin import model_path
from respmatch.search.generate import relax_items
from respmatch.search.relax import BatchRelaxer
from respmatch.search.spec import SearchSpec


def timed_run(model, spec: SearchSpec, n: int, **settings) -> dict:
    relaxer = BatchRelaxer(model, **settings)
    started = time.perf_counter()
    items = ((i, spec, i) for i in range(n))
    records = [record for group in relax_items(relaxer, items) for _, _, record in group]
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rate": n / seconds,
        "calls": relaxer.model_calls,
        "largest": relaxer.largest_batch,
        "converged": sum(r.converged for r in records) / n,
        "median": statistics.median(r.pseudo_energy_per_atom for r in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--model", default="diamond")
    parser.add_argument("--composition", default="C8")
    parser.add_argument("--volume-per-atom", type=float)
    parser.add_argument("--preset")
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--counts", type=int, nargs="*", default=[64, 256], help="structures per batch")
    parser.add_argument("--budgets", type=int, nargs="*", default=[1024, 2048, 4096, 8192], help="atoms per batch")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = respmatch.load_model(model_path(args.model), dtype=dtype)
    spec = SearchSpec.build(model, args.composition, args.n, args.preset, args.volume_per_atom)
    settings = [(f"{c} structures", dict(batch_size=c)) for c in args.counts]
    settings += [(f"{b} atoms (auto)", dict(batch_size=None, max_atoms=b)) for b in args.budgets]
    print(f"## {args.n} {args.composition} ({spec.preset}), model {args.model}, {args.threads} thread(s), {args.dtype}")
    print("| batch | seconds | structures/s | model calls | fullest batch (structures, atoms) | converged | median Ẽ/atom |")
    print("|---|---|---|---|---|---|---|")
    for name, setting in settings:
        r = timed_run(model, spec, args.n, dtype=dtype, **setting)
        print(f"| {name} | {r['seconds']:.1f} | {r['rate']:.2f} | {r['calls']} | {r['largest']} | "
              f"{r['converged']:.0%} | {r['median']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
