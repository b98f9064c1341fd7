"""Scaling a search over Dask workers, and the single writer that stores it (issue 14).

1. The same search (fixed-volume C8 cells, the paper's one-shot protocol) on a ``LocalCluster`` of
   1 and of 2 worker processes, 1 thread each: wall time, parallel efficiency T1 / (2 T2), and
   per-chunk overhead as a share of chunk time: scheduling (a worker idle between two chunks,
   or before its first), model shipping (unpacking and checking the model on a worker) and
   record return (from the end of a chunk on its worker to its arrival at the client).
2. The scheduler: no-op tasks per second through the local cluster's scheduler (the basis of the
   projection to many workers), and the pickled size of one record (what a chunk sends back).
3. The writer: records per second that ``RunStore.write_many`` commits into SQLite, in chunks.
4. The machine's own ceiling, without Dask: one chunk's search in one plain process alone, then
   the same in two plain processes at once.  On a small machine two processes slow each other
   (shared caches, memory bandwidth, a virtual CPU's neighbour); the ratio is the most that any
   scheduler could reach here, and Dask's efficiency is read against it.

Run it on a quiet machine (``/work/wt/cpuslot --both``): it times parallel work.

    python benchmarks/scale.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from ase.build import bulk

import respmatch
from respmatch.cluster import dask_client
from respmatch.record import Record
from respmatch.store import RunStore
from respmatch.train import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent / "out" / "scale"))
    parser.add_argument("--model", help="a trained carbon model (default: train one on diamond-72)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--composition", default="C8")
    parser.add_argument("--volume-per-atom", default="3.8:5.6")
    parser.add_argument("--preset", default="fixed-volume")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chunk-size", type=int, default=64, help="structures per task (a few batches)")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--records", type=int, default=20000, help="records for the writer benchmark")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    model = args.model
    if model is None:
        model = out_dir / "diamond.pt"
        started = time.perf_counter()
        structures = respmatch.read_structures(Path(args.data_dir) / "diamond" / "diamond-72.xyz")
        respmatch.train(structures, model, config=TrainConfig(epochs=args.epochs), progress=False)
        print(f"trained {model} ({args.epochs} epochs) in {time.perf_counter() - started:.0f} s")
    low, _, high = args.volume_per_atom.partition(":")
    volume = (float(low), float(high)) if high else float(low)

    runs = {}
    for workers in (int(w) for w in args.workers.split(",")):
        runs[workers] = cluster_run(model, workers, volume, args, out_dir)
    writer = writer_throughput(args.records, args.chunk_size)
    ceiling = machine_ceiling(model, volume, args, out_dir)
    report = {"settings": vars(args), "runs": runs, "writer": writer, "ceiling": ceiling}
    one = runs.get(1)
    print("\n| workers | wall s | structures/s | efficiency | chunks | chunk s (median) | scheduling | "
          "model shipping | record return | overhead |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for workers, run in runs.items():
        efficiency = one["seconds"] / (workers * run["seconds"]) if one else float("nan")
        run["efficiency"] = efficiency
        shares = run["overhead"]
        print(f"| {workers} | {run['seconds']:.1f} | {run['structures_per_second']:.1f} | {efficiency:.1%} | "
              f"{run['chunks']} | {run['chunk_seconds_median']:.2f} | {shares['scheduling']:.2%} | "
              f"{shares['model_shipping']:.2%} | {shares['record_return']:.2%} | {shares['total']:.2%} |")
    print(f"\nwriter: {writer['records_per_second']:.0f} records/s into SQLite "
          f"({writer['records']} C8 records, chunks of {args.chunk_size}, "
          f"{writer['seconds_per_chunk'] * 1e3:.1f} ms per chunk); {writer['bytes_per_record']} bytes "
          "per pickled record")
    print(f"machine ceiling without Dask: one chunk alone {ceiling['alone_seconds']:.1f} s, two at once "
          f"{ceiling['pair_seconds']:.1f} s: {ceiling['efficiency']:.1%} efficiency at best on this machine")
    if one and 2 in runs:
        relative = runs[2]["efficiency"] / ceiling["efficiency"]
        report["efficiency_of_ceiling"] = relative
        print(f"Dask at 2 workers reaches {relative:.1%} of that ceiling")
    if one and max(runs) > 1:
        report["projection"] = projection(runs, writer)
    (out_dir / "scale.json").write_text(json.dumps(report, indent=1, default=str) + "\n")


def cluster_run(model, workers: int, volume, args, out_dir: Path) -> dict:
    """One search on a fresh local cluster, its workers warmed up (imports) before the clock."""
    out = out_dir / f"workers{workers}.db"
    out.unlink(missing_ok=True)
    with dask_client(workers=workers) as client:
        client.run(lambda: __import__("respmatch.search.generate"))
        summary = respmatch.generate(
            model, args.composition, args.n, out, preset=args.preset, volume_per_atom=volume,
            batch_size=args.batch_size, progress=False, client=client, chunk_size=args.chunk_size,
        )
        tasks_per_second = scheduler_rate(client)
    chunks = summary["chunks"]
    overhead = chunk_overhead(chunks)
    print(f"{workers} worker(s): {summary['relaxed']} structures in {summary['seconds']:.1f} s, "
          f"{summary['converged_share']:.0%} converged, {len(chunks)} chunks; scheduler: "
          f"{tasks_per_second:.0f} no-op tasks/s")
    return {
        "structures": summary["relaxed"],
        "busy_seconds": sum(c["finished"] - c["started"] - c["load_seconds"] for c in chunks),
        "overhead_seconds": overhead["fixed_seconds"],
        "seconds": summary["seconds"],
        "structures_per_second": summary["structures_per_second"],
        "converged_share": summary["converged_share"],
        "chunks": len(chunks),
        "chunk_seconds_median": statistics.median(c["finished"] - c["started"] for c in chunks),
        "overhead": overhead,
        "scheduler_tasks_per_second": tasks_per_second,
    }


def search_alone(model, volume, args, out: str) -> float:
    """Seconds for one chunk's search in this (plain, 1-thread) process."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    respmatch.generate(model, args.composition, args.chunk_size, out, preset=args.preset, volume_per_atom=volume,
                       batch_size=args.batch_size, progress=False)
    return time.perf_counter() - started


def machine_ceiling(model, volume, args, out_dir: Path) -> dict:
    """The same chunk alone, then in two processes at once: the parallel efficiency this machine
    allows two single-threaded searches, with no scheduler involved."""
    outs = [out_dir / f"ceiling{k}.db" for k in range(5)]
    for out in outs:
        out.unlink(missing_ok=True)
    warm_up = argparse.Namespace(**{**vars(args), "chunk_size": 4})
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as pool:
        # both processes import and run a small search before the clock
        list(pool.map(search_alone, [model] * 2, [volume] * 2, [warm_up] * 2, map(str, outs[3:])))
        alone = pool.submit(search_alone, model, volume, args, str(outs[0])).result()
        pair = [pool.submit(search_alone, model, volume, args, str(out)) for out in outs[1:3]]
        pair_seconds = max(future.result() for future in pair)
    for out in outs:
        out.unlink(missing_ok=True)
    return {"alone_seconds": alone, "pair_seconds": pair_seconds, "efficiency": alone / pair_seconds}


def projection(runs: dict, writer: dict) -> list[dict]:
    """Throughput and efficiency at many workers, from what was measured here.

    c: compute seconds per structure on one worker; o: fixed overhead seconds per chunk
    (scheduling and model shipping on the most parallel run, per chunk); S: scheduler tasks/s;
    R: writer records/s.  With W workers and chunks of k structures, the workers alone would
    give W/c structures/s less o/(k c) of each chunk; the writer caps it at R and the scheduler
    at S k.  The tail (the last chunks finishing alone) is left out: it vanishes for runs of
    many chunks per worker.
    """
    one, many = runs[1], runs[max(runs)]
    c = one["busy_seconds"] / one["structures"]
    o = many["overhead_seconds"] / many["chunks"]
    scheduler, writer_rate = many["scheduler_tasks_per_second"], writer["records_per_second"]
    rows = []
    print(f"\nprojection (c = {c * 1e3:.1f} ms/structure/worker, o = {o * 1e3:.1f} ms/chunk, "
          f"S = {scheduler:.0f} tasks/s, R = {writer_rate:.0f} records/s)")
    print("| workers | chunk | ideal structures/s | projected structures/s | efficiency | limited by |")
    print("|---|---|---|---|---|---|")
    for workers in (100, 1000):
        for k in (16, 64, 256, 1024):
            ideal = workers / c
            limits = {"workers": ideal / (1 + o / (k * c)), "writer": writer_rate, "scheduler": scheduler * k}
            limit = min(limits, key=limits.get)
            row = {"workers": workers, "chunk": k, "ideal": ideal, "projected": limits[limit],
                   "efficiency": limits[limit] / ideal, "limited_by": limit}
            rows.append(row)
            print(f"| {workers} | {k} | {ideal:.0f} | {row['projected']:.0f} | {row['efficiency']:.0%} | {limit} |")
    return rows


def scheduler_rate(client, n_tasks: int = 2000) -> float:
    """No-op tasks per second, submitted at once and gathered: the scheduler's own cost per task."""
    started = time.perf_counter()
    client.gather(client.map(abs, range(n_tasks), pure=False))
    return n_tasks / (time.perf_counter() - started)


def chunk_overhead(chunks: list[dict]) -> dict:
    """Overhead shares of the total chunk time (worker clock and client clock agree: one machine).

    scheduling: per worker, the time before its first chunk began (after the submit) and between
    the end of one chunk and the start of its next; model shipping: unpacking and checking the
    model inside chunks; record return: chunk end on the worker to its arrival at the client.
    """
    by_worker = defaultdict(list)
    for chunk in chunks:
        by_worker[chunk["worker"]].append(chunk)
    busy = sum(c["finished"] - c["started"] for c in chunks)
    scheduling = 0.0
    for own in by_worker.values():
        own.sort(key=lambda c: c["started"])
        ends = [own[0]["submitted"]] + [c["finished"] for c in own[:-1]]
        scheduling += sum(c["started"] - end for c, end in zip(own, ends))
    shipping = sum(c["load_seconds"] for c in chunks)
    returning = sum(c["received"] - c["finished"] for c in chunks)
    shares = {"scheduling": scheduling / busy, "model_shipping": shipping / busy, "record_return": returning / busy}
    return {**shares, "total": sum(shares.values()), "fixed_seconds": scheduling + shipping}


def writer_throughput(n_records: int, chunk_size: int) -> dict:
    """Commit n C8 cells with their records through the store, a chunk per transaction."""
    atoms = bulk("C", "diamond", a=3.57, cubic=True)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "writer.db"
        with RunStore(path, {"composition": "C8", "n": n_records}) as store:
            started = time.perf_counter()
            for start in range(0, n_records, chunk_size):
                store.write_many(
                    (atoms, Record(i, 0, -1.0, True, 100, "constant-volume"), None)
                    for i in range(start, min(start + chunk_size, n_records))
                )
            seconds = time.perf_counter() - started
    chunks = -(-n_records // chunk_size)
    record = Record(0, 0, -1.0, True, 100, "constant-volume")
    return {"records": n_records, "seconds": seconds, "records_per_second": n_records / seconds,
            "seconds_per_chunk": seconds / chunks, "bytes_per_record": len(pickle.dumps((0, atoms, record)))}


if __name__ == "__main__":
    main()
