"""Judge generated carbon: coordination, known allotropes, distinct frameworks, reference coverage.

Coordination counts C–C bonds up to 1.7 Å: a structure is ``sp3`` when every atom has four
bonds, ``sp2`` when every atom has three, ``mixed`` when every atom has three or four and both
occur, ``other`` otherwise (two-fold chains, over-coordination, isolated atoms).

Allotropes are recognised with pymatgen's StructureMatcher (the CSP tolerances of
``respmatch.matching``) against templates built here.  Graphite is compared at the structure's own
volume per atom: the fixed-volume searches produce graphite whose layers are pressed together,
and a uniform rescaling of the 8.8 Å³/atom ideal would not bring the layer spacing into
tolerance.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from ase import Atoms
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from respmatch.errors import RespmatchError
from respmatch.evaluate.result import Evaluation, share
from respmatch.matching import csp_matcher
from respmatch.neighbors import neighbor_pairs
from respmatch.record import judged_fields
from respmatch.symmetry import symmetry_key

BOND_LENGTH = 1.7  # Å, longest C–C distance counted as a bond
GRAPHENE_BOND = 1.42  # Å, in-plane C–C of graphite
MATCHER = csp_matcher()
ALLOTROPES = ("diamond", "lonsdaleite", "graphite-AB", "graphite-AA")


def coordination_numbers(atoms: Atoms, bond_length: float = BOND_LENGTH) -> np.ndarray:
    """Number of neighbours within ``bond_length`` of each atom (periodic images included)."""
    periodic = bool(atoms.pbc.all())
    i, _, _ = neighbor_pairs(atoms.positions, atoms.cell.array, periodic, bond_length, full=True)
    return np.bincount(i, minlength=len(atoms))


def coordination_label(counts: np.ndarray) -> str:
    kinds = set(counts.tolist())
    if kinds == {4}:
        return "sp3"
    if kinds == {3}:
        return "sp2"
    if kinds == {3, 4}:
        return "mixed"
    return "other"


def graphite(stacking: str, volume_per_atom: float) -> Atoms:
    """AB (Bernal) or AA graphite with the layer spacing that gives ``volume_per_atom``."""
    a = GRAPHENE_BOND * np.sqrt(3)
    area_per_atom = np.sqrt(3) / 4 * a**2  # hexagonal cell area / 2 atoms per layer
    spacing = volume_per_atom / area_per_atom
    cell = [[a, 0, 0], [-a / 2, a * np.sqrt(3) / 2, 0], [0, 0, spacing]]
    layer = [(0, 0), (1 / 3, 2 / 3)]
    if stacking == "AA":
        fractional = [(x, y, 0) for x, y in layer]
    else:
        cell[2][2] = 2 * spacing
        fractional = [(x, y, 0) for x, y in layer] + [(0, 0, 0.5), (2 / 3, 1 / 3, 0.5)]
    return Atoms("C" * len(fractional), scaled_positions=fractional, cell=cell, pbc=True)


def allotrope_templates(volume_per_atom: float) -> dict[str, Atoms]:
    return {
        "diamond": bulk("C", "diamond", a=3.567),
        "lonsdaleite": bulk("CC", "wurtzite", a=2.51, c=4.12),
        "graphite-AB": graphite("AB", volume_per_atom),
        "graphite-AA": graphite("AA", volume_per_atom),
    }


def identify_allotrope(atoms: Atoms, coordination: str | None = None) -> str | None:
    """The known allotrope ``atoms`` is, or None.  Only templates of the same coordination are
    tried: that skips hopeless comparisons and stops sp2 graphite from claiming a puckered sp3
    framework."""
    coordination = coordination or coordination_label(coordination_numbers(atoms))
    wanted = {"sp3": ALLOTROPES[:2], "sp2": ALLOTROPES[2:]}.get(coordination, ())
    if not wanted:
        return None
    structure = AseAtomsAdaptor.get_structure(atoms)
    templates = allotrope_templates(atoms.get_volume() / len(atoms))
    for name in wanted:
        if MATCHER.fit(structure, AseAtomsAdaptor.get_structure(templates[name])):
            return name
    return None


def framework_classes(structures: list, keys: list) -> list[int]:
    """Class id of every structure: equal ids match under StructureMatcher (within a key)."""
    representatives: dict = defaultdict(list)  # key -> [(class id, structure)]
    classes, next_id = [], 0
    for structure, key in zip(structures, keys):
        for class_id, representative in representatives[key]:
            if MATCHER.fit(structure, representative):
                classes.append(class_id)
                break
        else:
            representatives[key].append((next_id, structure))
            classes.append(next_id)
            next_id += 1
    return classes


def reference_coverage(distinct: dict[int, tuple], reference: list[Atoms]) -> tuple[set[int], dict[int, str]]:
    """Which reference structures some distinct generated structure matches.

    Returns (indices of found references, generated class id -> name of the first match).
    """
    by_key: dict = defaultdict(list)
    for k, atoms in enumerate(reference):
        by_key[symmetry_key(atoms)].append((k, AseAtomsAdaptor.get_structure(atoms)))
    found, names = set(), {}
    for class_id, (key, structure) in distinct.items():
        for k, candidate in by_key.get(key, ()):
            if MATCHER.fit(structure, candidate):
                found.add(k)
                names.setdefault(class_id, str(reference[k].info.get("source", k)))
    return found, names


def evaluate_carbon(structures: list[Atoms], reference: list[Atoms] | None = None) -> Evaluation:
    """Coordination, allotropes and distinct frameworks of generated carbon; coverage of
    ``reference`` (e.g. Carbon-24) when given.  Shares are over all tries; distinct structures
    and coverage count converged structures only, since unconverged ones are not minima."""
    records, pymatgen_structures, keys, symmetry_keys = [], [], [], []
    for k, atoms in enumerate(structures):
        if set(atoms.get_chemical_symbols()) != {"C"}:
            raise RespmatchError(f"structure {atoms.info.get('index', k)} is not pure carbon: {atoms.get_chemical_formula()}")
        if not atoms.pbc.all():
            raise RespmatchError(f"structure {atoms.info.get('index', k)} is not periodic: carbon evaluation needs a cell")
        coordination = coordination_label(coordination_numbers(atoms))
        key = symmetry_key(atoms)
        symmetry_keys.append(key)
        records.append(
            {
                **judged_fields(atoms, k),
                "n_atoms": len(atoms),
                "volume_per_atom": atoms.get_volume() / len(atoms),
                "coordination": coordination,
                "spacegroup": key[0],
                "allotrope": identify_allotrope(atoms, coordination),
            }
        )
        pymatgen_structures.append(AseAtomsAdaptor.get_structure(atoms))
        # A recognised allotrope is its own bucket, so slightly imperfect copies of it that
        # spglib puts in a lower space group still group together.
        keys.append((records[-1]["allotrope"] or key, coordination))

    converged = [k for k, r in enumerate(records) if r["converged"]]
    classes = framework_classes([pymatgen_structures[k] for k in converged], [keys[k] for k in converged])
    distinct = {}
    for k, class_id in zip(converged, classes):
        records[k]["distinct_id"] = class_id
        distinct.setdefault(class_id, (symmetry_keys[k], pymatgen_structures[k]))

    summary = _counts(records)
    summary["distinct"] = len(distinct)
    if reference is not None:
        found, names = reference_coverage(distinct, reference)
        for k in converged:
            records[k]["reference_match"] = names.get(records[k]["distinct_id"])
        summary["reference_structures"] = len(reference)
        summary["reference_found"] = len(found)  # reference rows (a reference set repeats some)
        summary["reference_coverage"] = share(len(found), len(reference))
        summary["distinct_in_reference"] = len(names)  # distinct generated frameworks found there

    groups = defaultdict(list)
    for record in records:
        groups[f"C{record['n_atoms']}"].append(record)
    return Evaluation(
        kind="carbon",
        summary=summary,
        groups={name: _counts(members) for name, members in sorted(groups.items(), key=lambda g: int(g[0][1:]))},
        records=records,
    )


def _counts(records: list[dict]) -> dict:
    n = len(records)
    counts = {
        "n": n,
        "converged": share(sum(r["converged"] for r in records), n),
        **{f"all_{c}" if c != "mixed" else c: share(sum(r["coordination"] == c for r in records), n) for c in ("sp3", "sp2", "mixed")},
    }
    counts.update({name: sum(r["allotrope"] == name for r in records) for name in ALLOTROPES})
    counts["distinct"] = len({r["distinct_id"] for r in records if "distinct_id" in r})
    return counts
