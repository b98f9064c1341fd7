"""The record of one relaxed structure: what a search keeps besides its atoms.

Its keys are defined here once.  The search makes records, the store writes them as columns,
export and ``read_run`` put them in ``atoms.info``, and the judges read them back from there.
"""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, fields

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
    def from_info(cls, info: dict) -> Record:
        """The record kept in a store row's key-value pairs or an ``atoms.info``."""
        return cls(**{key: info[key] for key in RECORD_KEYS})

    def as_dict(self) -> dict:
        return asdict(self)


RECORD_KEYS = tuple(f.name for f in fields(Record))


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
