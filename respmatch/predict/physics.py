"""Relax candidates with a universal potential, many cells per call, here or on Dask workers.

A candidate is (key, atoms).  The relaxation is FIRE on FrechetCellFilter (cell and positions)
through the RM search's batched relaxer driving the potential's batched form
(``recheck.potentials.batched_potential``: SevenNet-0 or CHGNet), the path that runs many times
faster than ASE one structure at a time (docs/results.md, "Physical re-check").  A chunk is a
pure function of picklable values, so ``cluster.run_chunks`` can send it to any worker; each
process loads the potential once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms

from respmatch.cluster import chunked, run_chunks
from respmatch.predict.records import Relaxation
from respmatch.recheck.potentials import batched_potential
from respmatch.search.relax import BatchRelaxer, Job, Stage


@dataclass(frozen=True)
class RelaxSettings:
    potential: str
    fmax: float  # eV/Å, atoms and cell-filter forces
    max_steps: int
    batch_size: int = 16
    device: str = "cpu"
    compiled: bool = False  # SevenNet-0 under torch.compile: ~1.5x per CPU core once compiled


def potential_on(name: str, device: str, compiled: bool = False):
    """The potential's batched form on ``device`` (loaded once per process, kept)."""
    potential = batched_potential(name, compiled)
    if device != "cpu":
        potential.model.to(device)  # both batched forms keep their network as ``model``
    return potential


def relax_stream(items: list[tuple[str, Atoms]], settings: RelaxSettings) -> Iterator[tuple[str, Relaxation]]:
    """(key, result) of each candidate as its relaxation ends; a non-finite energy is a result
    with ``error``."""
    stage = Stage("physical", fmax=settings.fmax, max_steps=settings.max_steps, cell="full")
    jobs = (Job(key=k, atoms=Atoms(a.numbers, a.positions, cell=a.cell, pbc=True), stages=(stage,))
            for k, (_, a) in enumerate(items))
    relaxer = BatchRelaxer(potential_on(settings.potential, settings.device, settings.compiled),
                           batch_size=settings.batch_size,
                           device=settings.device, dtype=torch.float64)
    for result in relaxer.run(jobs):
        energy = result.energy / len(result.atoms)
        finite = math.isfinite(energy)
        yield items[result.key][0], Relaxation(
            energy_per_atom=energy if finite else None,
            steps=int(result.steps),
            converged=bool(result.converged),
            numbers=result.atoms.numbers.tolist(),
            positions=np.round(result.atoms.positions, 8).tolist(),
            cell=np.round(result.atoms.cell.array, 8).tolist(),
            error=None if finite else "the potential returned a non-finite energy",
        )


def relax_chunk(items: list[tuple[str, Atoms]], settings: RelaxSettings) -> list[tuple[str, Relaxation]]:
    """One cluster chunk, on a worker."""
    return list(relax_stream(items, settings))


def relax_candidates(items: list[tuple[str, Atoms]], settings: RelaxSettings, client=None):
    """Lists of (key, result) as they complete: one at a time here (one batch kept full), a chunk at
    a time on a Dask ``client``."""
    if client is None:
        for result in relax_stream(items, settings):
            yield [result]
        return
    for chunk in run_chunks(client, relax_chunk, chunked(items, settings.batch_size), settings):
        yield chunk.results

