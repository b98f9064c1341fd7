"""Random structure search on a trained model: starts from a spec, batched relaxation, streamed store.

Structure i of a run depends only on its ``SearchSpec`` and i, so a resumed run simply relaxes
the indices that are not in the store yet, and a Dask cluster can relax any chunk of them
anywhere: nothing stored is lost or run twice.  Here (no client) one batched relaxer takes every
index; on a cluster each worker relaxes chunks of a few batches and the client alone writes.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from ase import Atoms
from tqdm.auto import tqdm

from respmatch.cluster import ShippedModel, chunked, run_chunks
from respmatch.errors import RespmatchError
from respmatch.files import check_output
from respmatch.model import Denoiser, as_model
from respmatch.model.checkpoint import torch_device
from respmatch.record import Record
from respmatch.search.relax import CPU_MAX_ATOMS, BatchRelaxer, Relaxed
from respmatch.search.spec import SearchSpec
from respmatch.store import RunStore

# (caller's key, spec, index): structure ``index`` of ``spec``, handed back under ``key``.
Item = tuple[object, SearchSpec, int]

CHUNK_BATCHES = 4  # a cluster chunk is this many batches unless chunk_size says otherwise


def check_batch_size(batch_size: int | None) -> None:
    """A count of structures, or None: batches sized by the relaxer's atom budget."""
    if batch_size is not None and batch_size <= 0:
        raise RespmatchError(f"batch size must be positive, got {batch_size}")


def record_of(result: Relaxed, spec: SearchSpec, index: int) -> Record:
    return Record(
        index=index,
        seed=spec.seed,
        pseudo_energy_per_atom=result.energy / len(result.atoms),
        converged=result.converged,
        steps=result.steps,
        stage=result.stage,
    )


def relax_items(relaxer: BatchRelaxer, items: Iterable[Item]) -> Iterator[list[tuple[object, Atoms, Record]]]:
    """Relax the items through one batch; yield lists of (key, relaxed atoms, record), the
    structures seen to finish at one look of the host together."""
    pending: dict[object, tuple[SearchSpec, int]] = {}

    def jobs():
        for key, spec, index in items:
            pending[key] = spec, index
            yield spec.job(index, key=key)

    for group in relaxer.run_groups(jobs()):
        out = []
        for result in group:
            spec, index = pending.pop(result.key)
            out.append((result.key, result.atoms, record_of(result, spec, index)))
        yield out


def relax_chunk(items: list[Item], model: ShippedModel, batch_size: int | None, device: str, dtype) -> list:
    """One cluster chunk, on a worker: the shipped model (checked against its checksum) relaxes
    the chunk's items with the batched relaxer; the results go back to the client."""
    relaxer = BatchRelaxer(model.load(device, dtype), batch_size=batch_size, device=device, dtype=dtype)
    return [result for group in relax_items(relaxer, items) for result in group]


def relaxed(
    model: Denoiser,
    items: Iterable[Item],
    *,
    batch_size: int | None,
    device: str,
    dtype,
    client=None,
    chunk_size: int | None = None,
    chunk_log: list | None = None,
) -> Iterator[list[tuple[object, Atoms, Record]]]:
    """Relax the items here or on a Dask ``client``: groups of results as they complete (one
    look of the relaxer at a time here, one chunk at a time on a cluster, its timings added to
    ``chunk_log``).  Items are taken as the batch or the cluster has room for them.
    ``batch_size`` None: batches sized by atoms (the relaxer's budget); a cluster chunk is then
    ``CHUNK_BATCHES`` times what the CPU budget holds of the first item's structure."""
    if client is None:
        relaxer = BatchRelaxer(model, batch_size=batch_size, device=device, dtype=dtype)
        yield from relax_items(relaxer, items)
        return
    if chunk_size is None:
        items = iter(items)
        first = next(items, None)
        if first is None:
            return
        items = itertools.chain([first], items)
        chunk_size = CHUNK_BATCHES * (batch_size or max(1, CPU_MAX_ATOMS // len(first[1].numbers)))
    chunks = chunked(items, chunk_size)
    results = run_chunks(
        client, relax_chunk, chunks, ShippedModel.of(model), batch_size=batch_size, device=device, dtype=dtype
    )
    for chunk in results:
        if chunk_log is not None:
            chunk_log.append(chunk.timings())
        yield chunk.results


def generate(
    model: Denoiser | str | Path,
    composition: str,
    n: int,
    out: str | Path,
    *,
    preset: str | None = None,
    volume_per_atom: float | tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "cpu",
    dtype=torch.float32,
    resume: bool = False,
    progress: bool = True,
    options: dict | None = None,
    client=None,
    chunk_size: int | None = None,
    valid_only: bool = False,
    max_kicks: int = 3,
    max_tries: int | None = None,
) -> dict:
    """Relax ``n`` random structures of ``composition`` on the model and store them in ``out``.

    ``model``: a checkpoint path, a model, or what ``respmatch.train()`` returns.  ``client``: a
    ``distributed.Client`` to relax chunks of ``chunk_size`` structures (default four batches)
    on its workers; the store is written here, by this process only.  The summary's ``chunks``
    holds each cluster chunk's timings (``ChunkResult.timings``).  ``batch_size``: structures
    relaxed at once; None (default): as many as the relaxer's atom budget holds.

    ``valid_only`` (molecules, here only): store only strictly valid molecules, ``n`` of them;
    an invalid try is kicked and relaxed again up to ``max_kicks`` times, then replaced by a
    fresh start (respmatch.search.valid), at most ``max_tries`` fresh starts (default 100 n).
    """
    model_path = str(model) if isinstance(model, (str, Path)) else None
    if "://" not in str(out):  # before any work: refused outputs, and never the model itself
        check_output(out, inputs=[model_path] if model_path else [])
    torch_device(device)
    model = as_model(model, device, dtype)
    spec = SearchSpec.build(model, composition, n, preset, volume_per_atom, seed, options)
    check_batch_size(batch_size)
    if valid_only and spec.settings.start != "molecule":
        raise RespmatchError(f"valid-only generation judges molecules; preset {spec.preset!r} makes crystals")
    if valid_only and client is not None:
        raise RespmatchError("valid-only generation runs in one process, not on a cluster")
    parameters = {
        **spec.parameters(),
        "model": model_path,
        "dtype": str(dtype).replace("torch.", ""),
        "batch_size": "auto" if batch_size is None else batch_size,
        "device": device,
    }
    if valid_only:  # only then: runs stored before the option existed still resume
        parameters["valid_only"] = {"max_kicks": max_kicks}
        # Here, not at the top: it loads RDKit, which a plain run's start-up does without.
        from respmatch.search.valid import ValidSearchCounts, valid_molecules
    with RunStore(out, parameters, resume=resume) as store:
        done = store.done_indices()
        todo = n - len(done)
        bar = tqdm(total=n, initial=n - todo, desc="generate", unit="structure", disable=not progress)
        started, finished, converged, distinct, chunks = time.perf_counter(), 0, 0, set(), []
        if valid_only:
            counts = ValidSearchCounts()
            found = valid_molecules(
                BatchRelaxer(model, batch_size=batch_size, device=device, dtype=dtype),
                spec,
                todo,
                max_kicks=max_kicks,
                # A resumed run goes on with new tries; those after the last stored run again.
                first_index=max(done, default=-1) + 1,
                max_tries=100 * n if max_tries is None else max_tries,
                counts=counts,
            ) if todo > 0 else ()
            groups = (
                [(result.atoms, record_of(result, spec, result.key), {"kicks": kicks, "smiles": smiles})]
                for result, kicks, smiles in found
            )
        else:
            # A generator: a run of 10¹² structures starts at once and holds only its batch.
            items = ((i, spec, i) for i in range(n) if i not in done)
            groups = (
                [(atoms, record, None) for _, atoms, record in group]
                for group in relaxed(
                    model, items, batch_size=batch_size, device=device, dtype=dtype, client=client,
                    chunk_size=chunk_size, chunk_log=chunks,
                )
            )
        for group in groups:
            written = store.write_many(group)
            distinct.update(extra["smiles"] for _, _, extra in group if extra)
            finished += len(written)
            converged += sum(record.converged for record in written)
            bar.update(len(written))
            bar.set_postfix(converged=f"{converged / max(finished, 1):.0%}",
                            per_s=f"{finished / (time.perf_counter() - started):.2f}")
        bar.close()
        seconds = time.perf_counter() - started
        summary = {
            "out": str(out),
            "relaxed": finished,
            "stored": len(store),
            "converged_share": converged / finished if finished else float("nan"),
            "seconds": seconds,
            "structures_per_second": finished / seconds if seconds > 0 else float("nan"),
            "chunks": chunks,
        }
        if valid_only and finished:
            summary.update(
                tries=counts.tries,
                kicks=counts.kicks,
                dropped=counts.dropped,
                tries_per_molecule=counts.tries / finished,
                kicks_per_molecule=counts.kicks / finished,
                valid_unique=len(distinct),
                valid_unique_per_second=len(distinct) / seconds,
            )
        return summary


def search_compositions(
    model: Denoiser | str | Path,
    tries: dict[str, int],
    *,
    preset: str | None = None,
    volume_per_atom: float | tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str = "cpu",
    dtype=torch.float32,
    options: dict | None = None,
    progress: bool = True,
    client=None,
    chunk_size: int | None = None,
) -> Iterator[Atoms]:
    """Relax ``tries[formula]`` structures of each composition, all through one shared batch
    (or on the workers of a Dask ``client``).

    Many compositions with few tries each (crystal structure prediction, a molecule benchmark)
    keep the batch full this way.  Try i of a composition is the structure ``generate`` makes
    for index i with the same seed.  Each structure is yielded as it finishes, with its
    ``Record`` and its composition in ``info``.
    """
    model = as_model(model, device, dtype)
    check_batch_size(batch_size)
    # Every composition is checked before any relaxation runs.
    specs = {
        formula: SearchSpec.build(model, formula, n, preset, volume_per_atom, seed, options)
        for formula, n in tries.items()
    }
    items = [((formula, i), spec, i) for formula, spec in specs.items() for i in range(spec.n)]
    groups = relaxed(
        model, items, batch_size=batch_size, device=device, dtype=dtype, client=client, chunk_size=chunk_size
    )
    with tqdm(total=len(items), desc="search", unit="structure", disable=not progress) as bar:
        for group in groups:
            for (formula, _), atoms, record in group:
                atoms.info.update(composition=formula, **record.as_dict())
                bar.update(1)
                yield atoms
