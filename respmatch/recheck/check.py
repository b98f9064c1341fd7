"""Re-check one chunk of structures with a physical potential: items in, records out.

``recheck_chunk`` is a pure function of picklable values, so a process pool (or a Dask worker)
can run it anywhere; each process loads a potential once and keeps it.  Per structure: the
single-point energy and largest force at the RM structure, and with relaxation (ASE FIRE on
FrechetCellFilter for crystals, on positions for molecules) the relaxed energy, steps,
convergence, RMS displacement, whether the structure survived, and the relaxed structure.

ASE's own optimisers, not the RM search's batched relaxer: it is what every workflow of these
potentials runs and each structure here costs one potential call per step either way, except
where a potential batches (``batch_size`` > 1 with SevenNet-0 or CHGNet; see docs/results.md
for what that gains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE

from respmatch.recheck.potentials import ase_calculator, batched_potential, package_version
from respmatch.record import SETTINGS_KEYS, RecheckRecord
from respmatch.search.relax import BatchRelaxer, Job, Stage


@dataclass(frozen=True)
class RecheckSettings:
    potential: str
    relax: bool = False
    fmax: float = 0.05  # eV/Å, on atoms and (crystals) on the cell filter's forces
    max_steps: int = 300
    batch_size: int = 1  # > 1: relax crystals through the batched relaxer, this many at once

    @classmethod
    def of(cls, verdict: RecheckRecord) -> RecheckSettings:
        """The settings a stored verdict was made with."""
        return cls(verdict.physical_potential, bool(verdict.recheck_relax), verdict.recheck_fmax, verdict.recheck_max_steps)

    def stored(self) -> dict:
        """The settings as stored beside every verdict (``RecheckRecord``'s first fields); the
        batch size does not change a result and is not stored."""
        return dict(zip(SETTINGS_KEYS, (self.potential, self.relax, self.fmax, self.max_steps)))


def recheck_chunk(items: list[tuple[int, Atoms]], settings: RecheckSettings) -> list[dict]:
    """Records (keyed by each item's key) of re-checked structures, in input order: ``key`` and
    the fields of a ``RecheckRecord`` (plain dicts, which pickle cheaply between processes).

    A structure the potential fails on (e.g. an SCF that does not converge) gets a record with
    ``physical_error`` instead of values: one bad structure never stops a run.
    """
    version = package_version(settings.potential)
    records = []
    for key, atoms in items:
        record = {"key": key, **settings.stored(), "physical_version": version}
        try:
            record.update(single_point(atoms, settings.potential))
        except Exception as error:  # the potentials raise their own types (tblite: TBLiteError)
            record["physical_error"] = f"{type(error).__name__}: {error}"
        records.append(record)
    if settings.relax:
        todo = [(record, atoms) for record, (_, atoms) in zip(records, items) if "physical_error" not in record]
        relaxed = relax_structures([atoms for _, atoms in todo], settings)
        for (record, atoms), (result, error) in zip(todo, relaxed):
            if error is not None:
                record["physical_error"] = error
            else:
                record.update(relax_record(atoms, *result))
    return records


def single_point(atoms: Atoms, potential: str) -> dict:
    atoms = bare(atoms)
    atoms.calc = ase_calculator(potential)
    energy = atoms.get_potential_energy()
    largest = float(np.linalg.norm(atoms.get_forces(), axis=1).max())
    return {"physical_energy_per_atom": finite(energy / len(atoms)), "physical_fmax": finite(largest)}


def relax_structures(structures: list[Atoms], settings: RecheckSettings) -> list[tuple[tuple | None, str | None]]:
    """((relaxed atoms, energy, steps, converged), None) or (None, error) per structure."""
    if settings.batch_size > 1 and structures and all(a.pbc.all() for a in structures):
        try:
            return relax_batched(structures, settings)
        except Exception:  # one structure the potential fails on: find it one by one below
            pass
    out = []
    for atoms in structures:
        try:
            out.append((relax_one(atoms, settings), None))
        except Exception as error:
            out.append((None, f"{type(error).__name__}: {error}"))
    return out


def relax_one(atoms: Atoms, settings: RecheckSettings) -> tuple[Atoms, float, int, bool]:
    atoms = bare(atoms)
    atoms.calc = ase_calculator(settings.potential)
    target = FrechetCellFilter(atoms) if atoms.pbc.all() else atoms
    optimizer = FIRE(target, logfile=None)
    converged = bool(optimizer.run(fmax=settings.fmax, steps=settings.max_steps))
    return atoms, finite(atoms.get_potential_energy()), int(optimizer.nsteps), converged


def relax_batched(structures: list[Atoms], settings: RecheckSettings):
    """The same FIRE on FrechetCellFilter, many cells per potential call (respmatch.search.relax)."""
    stage = Stage("physical", fmax=settings.fmax, max_steps=settings.max_steps, cell="full")
    jobs = (Job(key=k, atoms=bare(a), stages=(stage,)) for k, a in enumerate(structures))
    relaxer = BatchRelaxer(batched_potential(settings.potential), batch_size=settings.batch_size, dtype=torch.float64)
    results = sorted(relaxer.run(jobs), key=lambda r: r.key)
    return [((r.atoms, finite(r.energy), r.steps, r.converged), None) for r in results]


def relax_record(start: Atoms, relaxed: Atoms, energy: float, steps: int, converged: bool) -> dict:
    return {
        "relaxed_energy_per_atom": energy / len(relaxed),
        "relax_steps": steps,
        "relax_converged": converged,
        "relax_rms_displacement": rms_displacement(start, relaxed),
        "relax_survived": survived(start, relaxed),
        "relaxed_positions": relaxed.positions.copy(),
        "relaxed_cell": relaxed.cell.array.copy() if relaxed.pbc.all() else None,
    }


def rms_displacement(start: Atoms, relaxed: Atoms) -> float:
    """RMS of the atoms' displacements, Å, their common drift removed."""
    moved = relaxed.positions - start.positions
    moved -= moved.mean(0)
    return float(np.sqrt((moved**2).sum(1).mean()))


def survived(start: Atoms, relaxed: Atoms) -> bool:
    """Crystals: StructureMatcher (the CSP tolerances) still matches the RM structure.
    Molecules: the same canonical SMILES, and a perceivable one."""
    # Imported here: pymatgen's matcher and RDKit take seconds to import, and only this needs them.
    from respmatch.chem import same_molecule
    from respmatch.matching import csp_matcher, to_structure

    if start.pbc.all():
        return bool(csp_matcher().fit(to_structure(start), to_structure(relaxed)))
    return same_molecule(start, relaxed)


def bare(atoms: Atoms) -> Atoms:
    """Numbers, positions and cell only: no stored calculator or info travels into a relaxation."""
    return Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)


def finite(value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise FloatingPointError(f"the potential returned {value}")
    return value
