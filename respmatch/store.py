"""Results store of a random-structure-search run, kept in an ASE database.

Every structure is written, and committed, the moment it finishes, so a run killed at any moment
loses only the structures in flight; a resumed run reads back which indices are stored and skips
them.  The run parameters (model checksum included) live in the database metadata, so a resume
can refuse to mix structures from a different run into the same file.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterator
from pathlib import Path

import ase.db
import numpy as np
from ase import Atoms
from ase.io import write as ase_write

# Parameters that may differ between a run and its resumption; n may only grow (extend a run).
RESUME_MAY_CHANGE = frozenset({"batch_size", "device", "threads", "n"})

# Per-structure keys copied into ``atoms.info`` on export.
INFO_KEYS = ("index", "seed", "pseudo_energy_per_atom", "converged", "steps", "stage")

EXPORT_FORMATS = {".cif": "cif", ".extxyz": "extxyz", ".xyz": "extxyz"}

_MISSING = "<missing>"


def _connect(path_or_url: str | Path):
    """Open the database: URLs (postgresql://...) pass through, any plain path is SQLite.

    No ASE lock file for SQLite: SQLite locks and commits on its own, while the lock file of a
    writer killed mid-write would stay behind and make every later write wait forever.
    """
    name = str(path_or_url)
    if "://" in name:
        return ase.db.connect(name)
    return ase.db.connect(name, type="db", use_lock_file=False)


def _plain(value):
    """JSON-ready copy (tuples, arrays → lists; numpy scalars → Python) so values round-trip."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _run_id(parameters: dict) -> str:
    """Short id of the run, stable across resumes (keys that may change are left out).

    Prefixed with 'r' because ASE refuses string values that parse as numbers (e.g. '1234e567').
    """
    defining = {k: v for k, v in parameters.items() if k not in RESUME_MAY_CHANGE}
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()
    return "r" + digest[:12]


def _check_resume(path: str, stored: dict, given: dict) -> None:
    """Refuse to resume with parameters that define a different run, or with a smaller n."""
    keys = (stored.keys() | given.keys()) - RESUME_MAY_CHANGE
    differ = sorted(k for k in keys if stored.get(k, _MISSING) != given.get(k, _MISSING))
    if differ:
        details = "; ".join(
            f"{k}: stored {stored.get(k, _MISSING)!r}, given {given.get(k, _MISSING)!r}"
            for k in differ
        )
        raise ValueError(f"{path}: cannot resume, the run parameters differ: {details}")
    if "n" in stored and "n" in given and given["n"] < stored["n"]:
        raise ValueError(
            f"{path}: cannot resume with n={given['n']}: the run asks for n={stored['n']} "
            "structures and n may only grow"
        )


def _sorted_rows(db) -> Iterator:
    """Rows of the run (those with an 'index' key), sorted by index."""
    return db.select("index", sort="index")


class RunStore:
    """One run's structures in an ASE database, one committed row per finished structure."""

    def __init__(
        self, path_or_url: str | Path, parameters: dict | None = None, resume: bool = False
    ):
        self.path = str(path_or_url)
        self.db = _connect(self.path)
        stored = self.db.metadata
        count = self.db.count()
        if (count or stored) and not resume:
            raise FileExistsError(
                f"{self.path}: already holds a run of {count} structures; "
                "use --resume to continue it or choose another --out"
            )
        if parameters is None:
            self._parameters = stored
        else:
            self._parameters = _plain(parameters)
            if stored:
                _check_resume(self.path, stored, self._parameters)
            if self._parameters != stored:
                self.db.metadata = self._parameters
        self.run_id = _run_id(self._parameters)
        selected = self.db.select("index", columns=["id", "key_value_pairs"], include_data=False)
        self._done = {row.key_value_pairs["index"] for row in selected}

    @property
    def metadata(self) -> dict:
        """The run parameters as stored (JSON values: tuples come back as lists)."""
        return dict(self._parameters)

    def done_indices(self) -> set[int]:
        """Indices already stored: a resumed run generates only the others."""
        return set(self._done)

    def __len__(self) -> int:
        return len(self._done)

    def write(
        self,
        atoms: Atoms,
        *,
        index: int,
        seed: int,
        pseudo_energy_per_atom: float,
        converged: bool,
        steps: int,
        stage: str,
        extra: dict | None = None,
    ) -> None:
        """Store one finished structure as its own committed row; an index is never stored twice."""
        index = operator.index(index)
        if index in self._done:
            raise ValueError(f"{self.path}: structure {index} is already stored")
        pairs = {
            "index": index,
            "seed": operator.index(seed),
            "pseudo_energy_per_atom": float(pseudo_energy_per_atom),
            "converged": bool(converged),
            "steps": operator.index(steps),
            "stage": str(stage),
            "run": self.run_id,
        }
        for key, value in (extra or {}).items():
            if key in pairs:
                raise ValueError(f"extra key {key!r} would overwrite a standard key")
            pairs[key] = value.item() if isinstance(value, np.generic) else value
        self.db.write(atoms, key_value_pairs=pairs)
        self._done.add(index)

    def rows(self) -> Iterator[tuple[Atoms, dict]]:
        """Stored (atoms, key-value pairs), sorted by index."""
        for row in _sorted_rows(self.db):
            yield row.toatoms(), dict(row.key_value_pairs)


def read_run(db_path: str | Path) -> list[Atoms]:
    """The stored structures sorted by index, each with its INFO_KEYS in ``atoms.info``."""
    name = str(db_path)
    if "://" not in name and not Path(name).is_file():
        raise FileNotFoundError(f"{name}: no such results database")
    structures = []
    for row in _sorted_rows(_connect(name)):
        atoms = row.toatoms()
        atoms.info.update({key: row.key_value_pairs[key] for key in INFO_KEYS})
        structures.append(atoms)
    return structures


def export(db_path: str | Path, out_path: str | Path, *, only_converged: bool = False) -> int:
    """Write the stored structures, sorted by index, to extxyz or CIF (by suffix); return the count.

    Everything is read and checked before the file is opened, so a refused export writes nothing.
    """
    out_path = Path(out_path)
    fmt = EXPORT_FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise ValueError(
            f"{out_path}: unknown suffix {out_path.suffix!r}; supported: "
            + ", ".join(sorted(EXPORT_FORMATS))
        )
    images = []
    for atoms in read_run(db_path):
        if only_converged and not atoms.info["converged"]:
            continue
        if fmt == "cif" and not atoms.pbc.all():
            raise ValueError(
                f"{out_path}: structure {atoms.info['index']} is not periodic and CIF holds only "
                "crystals; export to .xyz instead"
            )
        images.append(atoms)
    ase_write(out_path, images, format=fmt)
    return len(images)
