"""Read training structures from extxyz, CIF and CDVAE-style csv files.

Every structure is validated and tagged with ``atoms.info["source"]`` so that a
problem found later (in training or analysis) can be traced back to its record.
"""

import csv
import re
import warnings
from collections.abc import Iterable, Iterator
from os import PathLike
from pathlib import Path

import ase.io
from ase import Atoms

from .validate import StructureError, validate_structure

# A record is (where, source, atoms): `where` prefixes error messages
# ("file.xyz: frame 3"), `source` goes into atoms.info["source"] ("file.xyz:3").
Record = tuple[str, str, Atoms]
Source = str | PathLike | Atoms


def read_structures(sources: Source | Iterable[Source], *, min_distance: float = 0.5) -> list[Atoms]:
    """Read and validate structures from paths (files or directories) and/or Atoms objects."""
    if isinstance(sources, (str, PathLike, Atoms)):
        sources = [sources]
    structures = []
    for k, source in enumerate(sources):
        if isinstance(source, Atoms):
            records = [(f"<Atoms #{k}>", f"<Atoms #{k}>", source.copy())]
        else:
            records = _read_path(Path(source))
        for where, name, atoms in records:
            validate_structure(atoms, where, min_distance=min_distance)
            atoms.info["source"] = name
            structures.append(atoms)
    return structures


def _read_path(path: Path) -> list[Record]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _READERS)
        if not files:
            raise StructureError(f"{path}: no supported files in directory (supported: {_SUPPORTED})")
        return [record for file in files for record in _read_file(file)]
    if not path.exists():
        raise StructureError(f"{path}: no such file or directory")
    return _read_file(path)


def _read_file(path: Path) -> list[Record]:
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise StructureError(f"{path}: unknown format '{path.suffix}' (supported: {_SUPPORTED})")
    if path.stat().st_size == 0:
        raise StructureError(f"{path}: empty file")
    try:
        records = list(reader(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise StructureError(f"{path}: cannot read file: {exc}") from exc
    if not records:
        raise StructureError(f"{path}: empty file (no structure found)")
    return records


def _read_extxyz(path: Path) -> Iterator[Record]:
    k = 0
    try:
        for atoms in ase.io.iread(path, index=":", format="extxyz"):
            yield f"{path}: frame {k}", f"{path}:{k}", atoms
            k += 1
    except Exception as exc:
        # ASE scans all frame headers before parsing the first frame, so a bad
        # header cannot be pinned to a frame.
        where = str(path) if "xyz header" in str(exc) else f"{path}: frame {k}"
        raise StructureError(f"{where}: {_describe_ase_error(exc)}") from exc


def _describe_ase_error(exc: Exception) -> str:
    """ASE reports an unknown element symbol as a bare KeyError('Xx'); say so."""
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return f"unknown element {exc.args[0]!r} (KeyError: {exc})"
    return f"unreadable record: {type(exc).__name__}: {exc}"


def _read_cif(path: Path) -> Iterator[Record]:
    for k, (name, text) in enumerate(_cif_blocks(path.read_text())):
        if "_atom_site_" in text.lower():  # other blocks hold metadata, not structures
            where = f"{path}: block {k} (data_{name})"
            yield where, f"{path}:block {k} ({name})", _atoms_from_cif(text, where)


def _cif_blocks(text: str) -> list[tuple[str, str]]:
    """Split CIF text into (name, text) per data block.

    Done here rather than by pymatgen, which keeps only the last of several
    blocks with the same name and cannot tell which block failed to parse.
    """
    parts = re.split(r"^\s*data_", text, flags=re.MULTILINE)[1:]
    return [((part.split() or [""])[0], "data_" + part) for part in parts]


_CELL_TAGS = tuple(f"_cell_length_{x}" for x in "abc") + tuple(
    f"_cell_angle_{x}" for x in ("alpha", "beta", "gamma")
)


def _atoms_from_cif(text: str, where: str) -> Atoms:
    """Parse CIF text holding exactly one structure into periodic ASE Atoms."""
    # pymatgen imported here, not at the top: every run reader imports this module, and a
    # `generate` process should not pay pymatgen's import (about 1 s) before its first step
    from pymatgen.core import DummySpecies
    from pymatgen.io.ase import AseAtomsAdaptor
    from pymatgen.io.cif import CifParser

    if not text.strip():
        raise StructureError(f"{where}: empty CIF text")
    missing = [tag for tag in _CELL_TAGS if tag not in text.lower()]
    if missing and "_atom_site_" in text.lower():  # pymatgen: "cannot reshape array of size 1..."
        raise StructureError(f"{where}: no unit cell (missing {', '.join(missing)})")
    with warnings.catch_warnings():
        # pymatgen only warns about e.g. unknown elements; they are checked below
        warnings.simplefilter("ignore")
        try:
            structures = CifParser.from_str(text).parse_structures(primitive=False, on_error="raise")
        except Exception as exc:
            message = str(exc).replace("\n", " ")  # keep each error on one log line
            raise StructureError(f"{where}: unreadable record: {message}") from exc
    if len(structures) != 1:
        raise StructureError(f"{where}: expected one structure in the CIF text, found {len(structures)}")
    structure = structures[0]
    # pymatgen turns an unknown symbol into a DummySpecies instead of failing
    unknown = sorted({sp.symbol for sp in structure.composition.elements if isinstance(sp, DummySpecies)})
    if unknown:
        raise StructureError(f"{where}: unknown element {', '.join(map(repr, unknown))}")
    try:
        # plain Atoms rather than pymatgen's MSONAtoms subclass, to keep pymatgen types out of training data
        return Atoms(AseAtomsAdaptor.get_atoms(structure))
    except Exception as exc:
        raise StructureError(f"{where}: cannot convert to ASE Atoms: {exc}") from exc


def _read_csv(path: Path) -> Iterator[Record]:
    """CDVAE format: one CIF text per row in a `cif` column, optional `material_id`."""
    csv.field_size_limit(2**31 - 1)  # CIF texts can exceed the 128 kB default
    with path.open(newline="") as file:
        reader = csv.DictReader(file)
        try:
            if "cif" not in (reader.fieldnames or []):
                raise StructureError(f"{path}: no 'cif' column (columns: {reader.fieldnames})")
            for k, row in enumerate(reader):
                material_id = row.get("material_id")
                where, name = f"{path}: row {k}", f"{path}:row {k}"
                if material_id:
                    where, name = f"{where} (material_id {material_id})", f"{name} ({material_id})"
                yield where, name, _atoms_from_cif(row["cif"] or "", where)
        except csv.Error as exc:
            raise StructureError(f"{path}: line {reader.line_num}: malformed csv: {exc}") from exc


_READERS = {".xyz": _read_extxyz, ".extxyz": _read_extxyz, ".cif": _read_cif, ".csv": _read_csv}
_SUPPORTED = ", ".join(_READERS)
