"""Cost of one model call with message passing against the strictly local model.

The same batch of QM7 molecules (rattled by 0.1 Å, as a search meets them), the neighbour graph
built once, models of the QM7 benchmark's architecture with 0, 1 and 2 interaction layers
(untrained: the cost does not depend on the weights).  Two calls are timed, interleaved so that
a shared machine slows all models alike: energy and forces (a relaxation step), and energy and
forces with the graph kept plus a backward pass (a training step).  Prints the median time of
each and its ratio to the local model.

    python benchmarks/message_passing_cost.py --data-dir ../shared/data --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import respmatch
from respmatch.model import Denoiser, ModelConfig
from respmatch.neighbors import build_graph
from respmatch.structures import Structures


def relaxation_step(model, structures, graph):
    model(structures, graph, forces=True)


def training_step(model, structures, graph):
    out = model(structures, graph, forces=True, create_graph=True)
    (out["forces"].square().sum() + out["energy"].sum()).backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--molecules", type=int, default=128, help="molecules per call (the search's batch)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--layers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    qm7 = respmatch.read_structures(Path(args.data_dir) / "qm7" / "qm7.extxyz")
    rng = np.random.default_rng(0)
    batch = [qm7[i].copy() for i in rng.choice(len(qm7), args.molecules, replace=False)]
    for atoms in batch:
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    structures = Structures.from_atoms(batch, dtype=torch.float32)
    elements = tuple(sorted({int(z) for a in qm7 for z in a.numbers}))
    models = {}
    for layers in args.layers:
        torch.manual_seed(0)
        models[layers] = Denoiser(ModelConfig(elements=elements, avg_neighbors=12.0, message_passing=layers))
    graph = build_graph(structures, models[args.layers[0]].config.cutoff)
    print(f"{args.molecules} QM7 molecules, {len(structures.numbers)} atoms, {len(graph.sender)} edges, "
          f"{args.threads} thread(s)")
    for name, call in (("relaxation step (forces)", relaxation_step), ("training step (forces, backward)", training_step)):
        times = {layers: [] for layers in models}
        for repeat in range(args.repeats + 2):
            for layers, model in models.items():
                started = time.perf_counter()
                call(model, structures, graph)
                if repeat >= 2:  # the first calls warm up allocations
                    times[layers].append(time.perf_counter() - started)
        local = statistics.median(times[args.layers[0]])
        for layers, values in times.items():
            median = statistics.median(values)
            print(f"{name:34} message_passing={layers}: {1000 * median:7.1f} ms per call, "
                  f"{median / local:.2f}× layers={args.layers[0]}")


if __name__ == "__main__":
    main()
