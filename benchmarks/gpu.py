"""Every GPU figure of issue 24 in one short run, so that a lent device's minutes go to measuring.

On the device (NVIDIA card, its CPU cores beside it), with the shipped diamond model:

1. a profile of one GPU batch of C8 cells: the share of a step in model forward, backward,
   neighbour lists, FIRE and cell update, bookkeeping, and the rest (Python, waiting for the
   device); each part timed with a device synchronisation around it, so the profiled run is
   slower than a plain one: the plain run's time per step is printed beside it;
2. relaxed C8 cells per minute at 5 Å³/atom (the one-shot protocol, fixed-volume preset), the
   batch chosen by the relaxer's atom budget (free device memory), against the same run on the
   node's CPU cores (``--cpu-threads``), and whether both ended alike;
3. with ``--molecule-model`` (a QM7-trained checkpoint): C5H8O molecules, GPU against the CPU
   cores, and whether both ended alike.

Figures print as Markdown and go to ``--out`` as JSON.  ``--device cpu --smoke`` runs every
part on a few structures on this machine's CPU, through the GPU code path (uncut lists, a check
every few steps, vesin's torch interface when installed): a test of the script, not a figure.

    python benchmarks/gpu.py --out gpu.json                        # on the device
    python benchmarks/gpu.py --device cpu --smoke --out smoke.json  # here, before lending one
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import respmatch  # noqa: E402
from generate_speed import Timers, PARTS, step_shares  # noqa: E402
from respmatch.builtin import model_path  # noqa: E402
from respmatch.search.relax import CHECK_EVERY_DEVICE, BatchRelaxer  # noqa: E402
from respmatch.search.spec import SearchSpec  # noqa: E402


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def relax_run(model, spec: SearchSpec, n: int, device: str, settings: dict, threads: int | None = None) -> dict:
    """Relax structures 0..n-1 of ``spec`` on ``device``; seconds, per-structure results, batch."""
    if threads:
        torch.set_num_threads(threads)
    relaxer = BatchRelaxer(model, device=device, dtype=torch.float32, **settings)
    jobs = [spec.job(i) for i in range(n)]
    synchronize(device)
    started = time.perf_counter()
    results = sorted(relaxer.run(jobs), key=lambda r: r.key)
    synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "per_second": n / seconds,
        "per_minute": 60 * n / seconds,
        "model_calls": relaxer.model_calls,
        "ms_per_step": 1e3 * seconds / max(relaxer.model_calls, 1),
        "largest_batch": {"structures": relaxer.largest_batch[0], "atoms": relaxer.largest_batch[1]},
        "converged": float(np.mean([r.converged for r in results])),
        "results": [(r.converged, r.energy / len(r.atoms), r.steps) for r in results],
    }


def agreement(gpu: dict, cpu: dict) -> dict:
    """How alike two runs of the same starts ended (float32 on two devices: chaotic relaxations
    may part after many steps, so the share that agree is what is reported)."""
    pairs = list(zip(gpu["results"], cpu["results"]))
    return {
        "compared": len(pairs),
        "same_converged": sum(a[0] == b[0] for a, b in pairs),
        "same_energy_1e-3": sum(abs(a[1] - b[1]) < 1e-3 for a, b in pairs),
        "same_steps": sum(a[2] == b[2] for a, b in pairs),
    }


def profile(model, spec, n, device, settings) -> dict:
    plain = relax_run(model, spec, n, device, settings)
    relaxer = BatchRelaxer(model, device=device, dtype=torch.float32, **settings)
    with Timers(PARTS, wait=lambda: synchronize(device)) as timers:
        synchronize(device)
        started = time.perf_counter()
        list(relaxer.run(spec.job(i) for i in range(n)))
        synchronize(device)
        seconds = time.perf_counter() - started
    return {
        "plain_ms_per_step": plain["ms_per_step"],
        "profiled_ms_per_step": 1e3 * seconds / relaxer.model_calls,
        "shares": {name: part / seconds for name, part in step_shares(timers.seconds, seconds)},
    }


def compare(label, model, spec, n, n_cpu, device, settings, threads, report) -> None:
    """``n`` structures on the device against the first ``n_cpu`` on the CPU cores."""
    on_device = relax_run(model, spec, n, device, settings)
    on_cpu = relax_run(model, spec, n_cpu, "cpu", {"batch_size": 256}, threads)
    report[label] = {
        "device": {k: v for k, v in on_device.items() if k != "results"},
        "cpu": {k: v for k, v in on_cpu.items() if k != "results"},
        "ratio": on_device["per_second"] / on_cpu["per_second"],
        "agreement": agreement({"results": on_device["results"][:n_cpu]}, on_cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="a few structures: test the script, not a figure")
    parser.add_argument("--cells", type=int, default=8192, help="C8 cells on the device")
    parser.add_argument("--cpu-cells", type=int, default=1024, help="C8 cells on the CPU cores")
    parser.add_argument("--profile-cells", type=int, default=1024)
    parser.add_argument("--molecule-model", help="QM7-trained checkpoint for the C5H8O figure")
    parser.add_argument("--molecules", type=int, default=2048)
    parser.add_argument("--cpu-molecules", type=int, default=512)
    parser.add_argument("--cpu-threads", type=int, default=16)
    parser.add_argument("--check-every", type=int, default=CHECK_EVERY_DEVICE)
    parser.add_argument("--max-atoms", type=int, help="atom budget of a device batch (default: from free memory)")
    parser.add_argument("--out", default="gpu.json")
    args = parser.parse_args()
    # A smoke test stops every relaxation early: it tests the script, not the protocol.
    short = {"stage0.max_steps": 30} if args.smoke else {}
    if args.smoke:
        args.cells, args.cpu_cells, args.profile_cells, args.molecules, args.cpu_molecules = 6, 4, 4, 4, 4
        args.cpu_threads = min(args.cpu_threads, torch.get_num_threads())
    device = args.device
    # Every structure may enter at once: the atom budget chooses the batch.
    settings = {"batch_size": 1_000_000, "check_every": args.check_every, "max_atoms": args.max_atoms}
    if torch.device(device).type == "cpu":  # the GPU path, as far as the CPU can take it
        settings.update(max_atoms=settings["max_atoms"] or 4096, cut_lists=False)

    report = {
        "device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cpu_threads": args.cpu_threads,
        "smoke": args.smoke,
    }
    model = respmatch.load_model(model_path("diamond"), device=device, dtype=torch.float32)
    crystal = SearchSpec.build(model, "C8", max(args.cells, args.cpu_cells), "fixed-volume", 5.0, options=short)
    # Warm-up (kernels, lists, allocator), not timed.
    relax_run(model, crystal, min(64, args.cells), device, settings)
    report["profile"] = profile(model, crystal, args.profile_cells, device, settings)
    compare("crystals", model, crystal, args.cells, args.cpu_cells, device, settings, args.cpu_threads, report)

    if args.molecule_model:
        molecule_model = respmatch.load_model(args.molecule_model, device=device, dtype=torch.float32)
        spec = SearchSpec.build(
            molecule_model, "C5H8O", max(args.molecules, args.cpu_molecules), "molecule",
            options={"box": (6.0, 4.0, 4.0), **short, **({"stage1.max_steps": 30} if args.smoke else {})},
        )
        relax_run(molecule_model, spec, min(64, args.molecules), device, settings)
        compare("molecules", molecule_model, spec, args.molecules, args.cpu_molecules, device, settings,
                args.cpu_threads, report)

    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"## {'SMOKE TEST, not a figure: ' if args.smoke else ''}{report['device']}, torch {report['torch']}, "
          f"{args.cpu_threads} CPU threads beside it")
    shares = report["profile"]["shares"]
    print(f"\nprofile, {args.profile_cells} C8 cells: {report['profile']['plain_ms_per_step']:.2f} ms per step "
          f"(profiled with a synchronisation around each part: {report['profile']['profiled_ms_per_step']:.2f} ms)")
    print("| part of a step | share |\n|---|---|")
    for name, share in shares.items():
        print(f"| {name} | {share:.0%} |")
    print("\n| run | device | structures | seconds | per minute | ratio | largest batch | ms/step | agree (converged, Ẽ 1e-3, steps) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label in ("crystals", "molecules"):
        if label not in report:
            continue
        entry = report[label]
        agree = entry["agreement"]
        for where in ("device", "cpu"):
            run = entry[where]
            batch = run["largest_batch"]
            print(f"| {label} | {where} | {round(run['per_second'] * run['seconds'])} | {run['seconds']:.1f} | "
                  f"{run['per_minute']:.0f} | {entry['ratio']:.1f}× | {batch['structures']} / {batch['atoms']} atoms | "
                  f"{run['ms_per_step']:.1f} | {agree['same_converged']}, {agree['same_energy_1e-3']}, "
                  f"{agree['same_steps']} of {agree['compared']} |")
    if "molecules" not in report:
        print("\n(no --molecule-model: the C5H8O figure was not measured)")


if __name__ == "__main__":
    main()
