"""``respmatch recheck``: judge stored candidates with a physical potential, resumably.

SOURCE is a run database (results go into each structure's own row: a store update, never a
second row) or any structure file the project reads (results go into ``out``, a new database
with one row per structure).  Every record is committed the moment its chunk returns, and the
settings travel with each record, so a run killed at any moment resumes (``resume=True``) with
only the structures not yet rechecked, and refuses to mix results of different settings.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import torch
from ase import Atoms
from tqdm.auto import tqdm

from respmatch.cluster import chunked, dask_client, run_chunks
from respmatch.errors import RespmatchError
from respmatch.files import check_output
from respmatch.io import StructureError
from respmatch.recheck.check import RecheckSettings, recheck_chunk
from respmatch.recheck.potentials import DEFAULT_POTENTIAL, check_structures, potential_info
from respmatch.recheck.store import RecheckStore
from respmatch.record import RecheckRecord
from respmatch.run import load_generated, open_run


def recheck(
    source: str | Path,
    potential: str | None = None,
    *,
    relax: bool = False,
    fmax: float = 0.05,
    max_steps: int = 300,
    top: int | None = None,
    only_converged: bool = False,
    out: str | Path | None = None,
    resume: bool = False,
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    chunk_size: int | None = None,
    batch_size: int = 16,
    threads: int = 1,
    progress: bool = True,
) -> dict:
    """Re-check the structures of ``source`` (all, converged ones, or the ``top`` lowest-Ẽ per
    composition) with ``potential`` (default: sevennet-0 for crystals, gfn2-xtb for molecules).

    Here, or on Dask: ``workers=N`` starts a local cluster of N processes, ``scheduler`` joins a
    running one, ``client`` uses the caller's.  Workers recheck chunks of ``chunk_size``
    structures (default: one batch, at least 4); this process alone writes the results, record by
    record as chunks return.  ``batch_size`` crystals are relaxed per call of a batched potential
    (SevenNet-0, CHGNet): many times faster than ASE one at a time (docs/results.md).
    """
    if top is not None and top < 1:
        raise RespmatchError(f"--top must be a positive number of structures, got {top}")
    if not fmax > 0 or max_steps < 0:  # "not >": a NaN fmax is refused too
        raise RespmatchError(f"need fmax > 0 and max steps >= 0, got {fmax} and {max_steps}")
    chunk_size = chunk_size or max(4, batch_size)
    if (workers is not None and workers < 1) or chunk_size < 1 or batch_size < 1:
        raise RespmatchError("workers, chunk size and batch size must be positive")
    if client is not None and (workers is not None or scheduler is not None):
        raise RespmatchError("give a Dask client or --workers/--scheduler, not both")
    is_run = Path(source).suffix.lower() == ".db"
    if out is None and not is_run:
        raise RespmatchError(f"{source}: not a run database; give --out OUT.db for the results")
    if out is not None:
        check_output(out, inputs=[source])
    run = open_run(source) if is_run else None
    structures = run.structures() if run else load_generated(source)
    if not structures:
        raise StructureError(f"{source}: the run database holds no structures")
    if not is_run:  # a file's own "index" (e.g. a try number per composition) need not be unique
        for position, atoms in enumerate(structures):
            atoms.info["index"] = position
    potential = potential or default_potential(structures, source)
    potential_info(potential)
    chosen = select(structures, top, only_converged, source)
    check_structures(potential, [(f"{source}: structure {a.info['index']}", a) for a in chosen])
    settings = RecheckSettings(potential, relax, float(fmax), int(max_steps), int(batch_size))

    failed = 0
    copy = None if out is None else (run or structures)
    with RecheckStore(out or source, settings.stored(), resume, copy, opened=run if out is None else None) as store:
        keyed = {store.key_of(atoms): atoms for atoms in chosen}
        todo = [(key, atoms) for key, atoms in keyed.items() if key not in store.done]
        started = time.perf_counter()
        with dask_client(workers, scheduler) as own_client, tqdm(
            total=len(keyed), initial=len(keyed) - len(todo), desc="recheck", unit="structure", disable=not progress
        ) as bar:
            for records in checked_chunks(todo, settings, client or own_client, chunk_size, threads):
                verdicts = [(record.pop("key"), RecheckRecord(**record)) for record in records]
                store.write_many(verdicts)
                failed += sum(verdict.physical_error is not None for _, verdict in verdicts)
                bar.update(len(records))
    seconds = time.perf_counter() - started
    return {
        "out": str(out or source),
        "potential": potential,
        "selected": len(keyed),
        "rechecked": len(todo),
        "failed": failed,
        "seconds": seconds,
        "structures_per_second": len(todo) / seconds if todo and seconds > 0 else float("nan"),
    }


def default_potential(structures: list[Atoms], source) -> str:
    kinds = {"crystal" if a.pbc.all() else "molecule" for a in structures}
    if len(kinds) > 1:
        raise RespmatchError(f"{source}: holds both crystals and molecules; recheck them separately")
    return DEFAULT_POTENTIAL[kinds.pop()]


def select(structures: list[Atoms], top: int | None, only_converged: bool, source) -> list[Atoms]:
    """The structures to recheck: converged ones if asked, then the ``top`` lowest-Ẽ per composition."""
    chosen = [a for a in structures if not only_converged or a.info.get("converged", True)]
    if top is None:
        return chosen
    groups = defaultdict(list)
    for atoms in chosen:
        if atoms.info.get("pseudo_energy_per_atom") is None:
            raise RespmatchError(f"{source}: structure {atoms.info['index']} has no pseudo_energy_per_atom to rank by for --top")
        groups[atoms.info.get("composition", atoms.get_chemical_formula())].append(atoms)
    kept = {id(a) for members in groups.values()
            for a in sorted(members, key=lambda a: a.info["pseudo_energy_per_atom"])[:top]}
    return [a for a in chosen if id(a) in kept]


def checked_chunks(todo, settings, client, chunk_size: int, threads: int):
    """Records of ``todo`` in chunks, as they complete: here, or on the workers of a Dask ``client``
    (each worker loads the potential once and keeps it for its later chunks)."""
    chunks = chunked(todo, chunk_size)
    if client is None:
        torch.set_num_threads(threads)
        for chunk in chunks:
            yield recheck_chunk(chunk, settings)
        return
    for result in run_chunks(client, recheck_chunk, chunks, settings):
        yield result.results
