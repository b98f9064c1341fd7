"""The records a run keeps beside each structure's atoms, each key defined here once.

``Record``: what the search found (its index, Ẽ, convergence).  ``RecheckRecord``: a physical
potential's verdict on the structure (``respmatch recheck``).  The store writes both as a row's
columns (the relaxed structure in the row's data), the run reader (respmatch.run) gives them back
typed, and ``atoms.info`` carries their keys wherever structures travel as ASE ``Atoms``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np
from ase import Atoms


@dataclass(frozen=True)
class Record:
    index: int  # the structure's place in its run: start i depends only on (seed, i)
    seed: int
    pseudo_energy_per_atom: float  # eV/atom, the model's Ẽ at the end of the relaxation
    converged: bool  # the last stage reached its fmax
    steps: int  # over all stages
    stage: str  # name of the last stage run

    def __post_init__(self):
        # Plain Python values whatever came in (numpy scalars from a batched run): the store and
        # extxyz write them as they are.
        for name, kind in (("index", operator.index), ("seed", operator.index), ("steps", operator.index),
                           ("pseudo_energy_per_atom", float), ("converged", bool), ("stage", str)):
            object.__setattr__(self, name, kind(getattr(self, name)))

    @classmethod
    def from_info(cls, info: Mapping) -> Record:
        """The record kept in a store row's key-value pairs or an ``atoms.info``."""
        return cls(**{key: info[key] for key in RECORD_KEYS})

    def as_dict(self) -> dict:
        return asdict(self)


RECORD_KEYS = tuple(f.name for f in fields(Record))


@dataclass(frozen=True)
class RecheckRecord:
    """A physical potential's verdict on one structure; fields it did not measure are None.

    The first four fields are the re-check's settings, stored beside every verdict so that a
    resumed re-check can refuse to mix settings.  ``physical_error`` replaces the values when the
    potential failed on the structure.  The relaxed structure travels in the row's data
    (``DATA_KEYS``), not its columns.
    """

    physical_potential: str
    recheck_relax: bool | None = None
    recheck_fmax: float | None = None  # eV/Å
    recheck_max_steps: int | None = None
    physical_version: str | None = None  # "PACKAGE VERSION MODEL"
    physical_energy_per_atom: float | None = None  # eV/atom, single point at the RM structure
    physical_fmax: float | None = None  # eV/Å, largest force there
    physical_error: str | None = None
    relaxed_energy_per_atom: float | None = None  # eV/atom, after the potential's relaxation
    relax_steps: int | None = None
    relax_converged: bool | None = None
    relax_rms_displacement: float | None = None  # Å, common drift removed
    relax_survived: bool | None = None  # the relaxed structure is still the RM structure
    relaxed_positions: np.ndarray | None = None  # Å
    relaxed_cell: np.ndarray | None = None  # Å, None for molecules

    @classmethod
    def from_pairs(cls, pairs: Mapping, data: Mapping | None = None) -> RecheckRecord | None:
        """The verdict kept in a row's key-value pairs (and data) or an ``atoms.info``; None
        where the structure was not rechecked."""
        if pairs.get("physical_potential") is None:
            return None
        values = {key: pairs[key] for key in RECHECK_KEYS if pairs.get(key) is not None}
        values.update({key: np.asarray(data[key]) for key in DATA_KEYS if data and data.get(key) is not None})
        return cls(**values)

    @property
    def settings(self) -> dict:
        """The settings part, as stored beside every verdict."""
        return {key: getattr(self, key) for key in SETTINGS_KEYS}

    @property
    def physical_energy(self) -> float | None:
        return physical_energy(self.columns())

    def columns(self) -> dict:
        """The measured values stored as a row's columns (None left out)."""
        return {key: getattr(self, key) for key in RECHECK_KEYS if getattr(self, key) is not None}

    def data(self) -> dict:
        """The relaxed structure, stored in the row's data."""
        return {key: getattr(self, key) for key in DATA_KEYS if getattr(self, key) is not None}

    def relaxed(self, numbers) -> Atoms | None:
        """The relaxed structure as ``Atoms`` (the numbers of the structure it started from)."""
        if self.relaxed_positions is None:
            return None
        cell = self.relaxed_cell
        return Atoms(numbers, self.relaxed_positions, cell=cell, pbc=cell is not None)


DATA_KEYS = ("relaxed_positions", "relaxed_cell")
RECHECK_KEYS = tuple(f.name for f in fields(RecheckRecord) if f.name not in DATA_KEYS)
SETTINGS_KEYS = RECHECK_KEYS[:4]


def physical_energy(values: Mapping) -> float | None:
    """The physical energy per atom of a re-check verdict (a record, row or ``atoms.info``):
    after relaxation when there was one, else the single point; None when the potential failed
    or gave no finite value.  The one rule every judge, ranking and report reads."""
    if values.get("physical_error") is not None:
        return None
    energy = values.get("relaxed_energy_per_atom")
    if energy is None:
        energy = values.get("physical_energy_per_atom")
    if energy is None or not math.isfinite(energy):
        return None
    return float(energy)


def judged_fields(atoms: Atoms, position: int) -> dict:
    """What the judges take from a structure's record, with one rule for what is missing.

    A structure read from a plain file has no record: its index is its position in the file, it
    has no Ẽ, and it counts as converged (a structure given to be judged is taken as a minimum).
    """
    info = atoms.info
    energy = info.get("pseudo_energy_per_atom")
    return {
        "index": int(info.get("index", position)),
        "converged": bool(info.get("converged", True)),
        "pseudo_energy_per_atom": None if energy is None else float(energy),
    }
