"""Read generated structures for evaluation: a run database or any structure file.

Every structure comes back as ASE ``Atoms`` whose ``info`` carries what the run stored
(``index``, ``pseudo_energy_per_atom``, ``converged``, ``steps``, ``stage``) when it is known,
and a run's re-check results (respmatch.store.RECHECK_KEYS, the relaxed structure as ``relaxed``).
"""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from respmatch.io import StructureError, read_structures
from respmatch.store import read_run


def load_generated(source: str | Path | list[Atoms]) -> list[Atoms]:
    """Structures from ``RUN.db`` (sorted by index), an extxyz/CIF/csv file, or a list of Atoms."""
    if isinstance(source, list):
        return source
    path = Path(source)
    if not path.exists():
        raise StructureError(f"{path}: no such file")
    if path.suffix.lower() == ".db":
        structures = read_run(path, relaxed=True)
        if not structures:
            raise StructureError(f"{path}: the run database holds no structures")
        return structures
    # No overlap check: generated structures whose atoms collapsed onto each other must still be
    # counted as failures, not refused at the door.
    return read_structures(path, min_distance=0.0)
