"""Symmetric random starts: a random space group, atoms on its Wyckoff positions (pyxtal).

Random structure search finds high-symmetry minima far more often when it starts from random
*symmetric* cells (AIRSS's SYMMOPS): the space group removes most of the degrees of freedom.
A start here is a primitive cell of exactly the requested atoms: a space group is drawn from
those whose Wyckoff multiplicities can hold the composition (weighted by a prior, e.g. how
often each group occurs among training crystals of that size), pyxtal places the atoms, and the
cell gets the requested volume with no two atoms closer than the minimum distance.  Every draw
comes from the generator passed in, so start ``index`` depends only on (seed, index).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from unittest import mock

import numpy as np
import spglib
from ase import Atoms
from ase.data import chemical_symbols

from respmatch.errors import RespmatchError
from respmatch.symmetry import quiet_spglib
from respmatch.neighbors import neighbor_pairs

SYMPREC = 1e-3  # Å: pyxtal places atoms exactly, so a tight tolerance sees the group it built
PRIOR_SYMPREC = 0.1  # Å: relaxed DFT crystals in data sets sit within ~0.1 Å of their group
ALL_GROUPS = tuple(range(1, 231))
MAX_GROUP_DRAWS = 50


@lru_cache(maxsize=None)
def _group(number: int):
    """pyxtal's space group (loading its Wyckoff tables takes ~15 ms: once per group).  pyxtal
    is imported where it is used: its import takes over a second, which a training or a plain
    search should not pay."""
    from pyxtal.symmetry import Group

    return Group(number)


@lru_cache(maxsize=None)
def _tolerance(species: tuple[str, ...], min_distance: float):
    """One minimum distance for every pair of species (building a Tol_matrix takes ~30 ms)."""
    from pyxtal.tolerance import Tol_matrix

    return Tol_matrix(*[(a, b, min_distance) for a in species for b in species], prototype="atomic")


@functools.cache
def _fast_merge_check():
    """pyxtal 1.1.5's Wyckoff merge calls ``check_images(..., tol=d)`` without a tolerance
    matrix, so each call builds a default one it never reads (an explicit ``tol`` overrides it):
    ~90% of a start's time.  Passing one prebuilt matrix changes no result."""
    import pyxtal.symmetry as pyxtal_symmetry
    from pyxtal.operations import check_images
    from pyxtal.tolerance import Tol_matrix

    return mock.patch.object(pyxtal_symmetry, "check_images",
                             functools.partial(check_images, tm=Tol_matrix(prototype="atomic")))


def parse_space_groups(spec: str) -> str | tuple[int, ...]:
    """``--space-groups``: ``prior`` (training-data frequencies), ``all`` (1–230 alike), or
    numbers and ranges such as ``2-230`` or ``1,2,12-15,225``."""
    text = spec.strip().lower()
    if text in ("prior", "all"):
        return text if text == "prior" else ALL_GROUPS
    groups = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise RespmatchError(
                f"--space-groups {spec!r}: expected 'prior', 'all', or numbers and ranges such as "
                "'2-230' or '1,2,12-15'"
            ) from None
        if not 1 <= first <= last <= 230:
            raise RespmatchError(f"--space-groups {spec!r}: {part.strip()!r} is not a range within 1-230")
        groups.update(range(first, last + 1))
    return tuple(sorted(groups))


def space_group_counts(structures: Iterable[Atoms], symprec: float = PRIOR_SYMPREC) -> dict[int, dict[int, int]]:
    """How often each space group occurs, per number of atoms in the primitive cell:
    ``{n_atoms: {group: count}}``, the prior of ``--space-groups prior``."""
    counts: dict[int, Counter] = {}
    for atoms in structures:
        cell = (atoms.cell.array, atoms.get_scaled_positions(), atoms.numbers)
        with quiet_spglib():
            dataset = spglib.get_symmetry_dataset(cell, symprec=symprec)
        if dataset is None:
            continue
        n_primitive = len(set(dataset.mapping_to_primitive))
        counts.setdefault(n_primitive, Counter())[int(dataset.number)] += 1
    return {n: dict(sorted(c.items())) for n, c in sorted(counts.items())}


def is_symmetric(index: int, share: float) -> bool:
    """Whether start ``index`` is a symmetric one when ``share`` of the starts are: spread
    evenly, so that any first n starts hold floor(share·n) symmetric ones."""
    return math.floor((index + 1) * share) > math.floor(index * share)


@dataclass(frozen=True)
class SpaceGroupChoice:
    """The space groups a composition's starts are drawn from, with their weights."""

    groups: tuple[int, ...]
    weights: tuple[float, ...]

    def draw(self, rng: np.random.Generator) -> int:
        p = np.asarray(self.weights, dtype=float)
        return int(self.groups[rng.choice(len(self.groups), p=p / p.sum())])


def compatible_groups(numbers: Sequence[int], groups: Iterable[int]) -> tuple[int, ...]:
    """Groups whose Wyckoff positions can hold these atoms in a primitive cell of this size."""
    counts = list(Counter(numbers).values())
    return tuple(
        g for g in groups if _group(g).check_compatible([c * _group(g).cellsize() for c in counts])[0]
    )


def space_group_choice(
    numbers: Sequence[int], spec: str | tuple[int, ...] = "prior", prior: dict | None = None
) -> SpaceGroupChoice:
    """Compatible groups of ``spec`` and their weights.

    ``prior`` weighs each compatible group by (1 + its count) among training crystals with the
    same number of atoms in the primitive cell (or among all of them, when none has that
    size): common groups first, yet every compatible group stays possible.  With no prior (a
    model trained without crystals), ``prior`` means all groups alike.
    """
    if isinstance(spec, str):
        spec = parse_space_groups(spec)
    formula = Atoms(numbers=list(numbers)).get_chemical_formula()
    candidates = ALL_GROUPS if spec == "prior" else spec
    groups = compatible_groups(numbers, candidates)
    if not groups:
        raise RespmatchError(
            f"no space group in {_describe(candidates)} is compatible with {formula} "
            f"({len(numbers)} atoms in a primitive cell)"
        )
    if spec != "prior" or not prior:
        return SpaceGroupChoice(groups, (1.0,) * len(groups))
    by_size = {int(n): {int(g): c for g, c in counts.items()} for n, counts in prior.items()}
    counts = by_size.get(len(numbers))
    if not counts:
        counts = Counter()
        for size_counts in by_size.values():
            counts.update(size_counts)
    return SpaceGroupChoice(groups, tuple(1.0 + counts.get(g, 0) for g in groups))


def _describe(groups: tuple[int, ...]) -> str:
    if groups == tuple(range(groups[0], groups[-1] + 1)):
        return f"{groups[0]}-{groups[-1]}" if len(groups) > 1 else f"{groups[0]}"
    return ",".join(map(str, groups))


def symmetric_start(
    numbers: Sequence[int],
    volume: float,
    rng: np.random.Generator,
    choice: SpaceGroupChoice,
    min_distance: float = 1.0,
) -> Atoms:
    """A primitive cell of exactly ``numbers``, ``volume`` Å³, in a group drawn from ``choice``.

    ``info["space_group"]`` is the group spglib finds in the start: the drawn one or, where
    pyxtal's filling puts atoms that make a higher symmetry (two atoms of one element always
    do), a supergroup of it.  Refilling the drawn group until spglib sees exactly it multiplied
    the time per start by 2-3 (pyxtal's filling is what a symmetric start costs: 0.05-2 s).
    """
    from pyxtal import pyxtal
    from pyxtal.lattice import Lattice

    counts = Counter(numbers)
    species = tuple(chemical_symbols[z] for z in counts)
    tolerance = _tolerance(species, float(min_distance))
    for _ in range(MAX_GROUP_DRAWS):
        number = choice.draw(rng)
        group = _group(number)
        # The conventional cell holds cellsize() primitive cells of the requested atoms.
        lattice = Lattice(group.lattice_type, volume * group.cellsize(), random_state=rng)
        crystal = pyxtal()
        with warnings.catch_warnings(), _fast_merge_check():
            warnings.simplefilter("ignore")  # pyxtal warns on each volume retry it makes
            try:
                crystal.from_random(3, number, list(species), [counts[z] for z in counts], lattice=lattice,
                                    conventional=False, tm=tolerance, random_state=rng, max_count=1)
            except (RuntimeError, ValueError):  # this group could not be filled: draw another
                continue
        atoms = _primitive(crystal.to_ase())
        if sorted(atoms.numbers) != sorted(numbers):  # a higher symmetry halved the cell
            continue
        atoms.set_cell(atoms.cell * (volume / atoms.get_volume()) ** (1 / 3), scale_atoms=True)
        if not len(neighbor_pairs(atoms.positions, atoms.cell.array, True, min_distance)[0]):
            return atoms
    formula = Atoms(numbers=list(numbers)).get_chemical_formula()
    raise RespmatchError(
        f"no symmetric {formula} cell of {volume:g} Å³ with atoms at least {min_distance:g} Å apart "
        f"after {MAX_GROUP_DRAWS} space groups drawn from {_describe(choice.groups)}"
    )


def _primitive(conventional: Atoms) -> Atoms:
    """spglib's primitive cell of pyxtal's conventional one, with its space group in ``info``."""
    cell = (conventional.cell.array, conventional.get_scaled_positions(), conventional.numbers)
    with quiet_spglib():
        number = spglib.get_symmetry_dataset(cell, symprec=SYMPREC).number
        lattice, scaled, atomic_numbers = spglib.find_primitive(cell, symprec=SYMPREC)
    return Atoms(numbers=atomic_numbers, scaled_positions=scaled, cell=lattice, pbc=True,
                 info={"space_group": int(number)})
