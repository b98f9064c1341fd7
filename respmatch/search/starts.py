"""Random starting structures for random structure search (docs/design.md §1.3).

Every draw comes from the ``numpy.random.Generator`` passed in, and ``start_rng`` derives that
generator from (seed, index) alone, so structure ``index`` of a search is the same whatever the
batch size, the order of generation or the number of workers.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers
from ase.formula import Formula

from respmatch.elements import MAX_Z, missing_elements_error, symbols
from respmatch.errors import RespmatchError

# One formula unit as element symbols with counts, parentheses allowed: C8, H2O, Ca(OH)2.  ASE's
# Formula also reads a leading multiplier and a charge, so '8C' and 'C8+' would pass as C8.
FORMULA = re.compile(r"(?:[A-Z][a-z]?\d*|\((?:[A-Z][a-z]?\d*)+\)\d*)+")


def parse_composition(formula: str, known_elements: Iterable[int] | None = None) -> list[int]:
    """Atomic numbers of one formula unit, sorted by atomic number (a deterministic order).

    ``known_elements`` are the elements the model was trained on: searching with any other would
    ask the model about chemistry it has never seen, so that is refused here, before any work.
    """
    if not FORMULA.fullmatch(formula):
        raise RespmatchError(
            f"unknown formula {formula!r}: write element symbols with counts, e.g. C8, H2O or Ca(OH)2"
        )
    try:
        counts = Formula(formula).count()
    except (KeyError, ValueError) as error:
        reason = str(error) or "cannot parse it"
        raise RespmatchError(f"unknown formula {formula!r}: {reason}") from None
    numbers = {}
    for symbol, count in counts.items():
        if symbol not in atomic_numbers:
            raise RespmatchError(f"unknown formula {formula!r}: no element {symbol!r}")
        z = atomic_numbers[symbol]
        if not 1 <= z <= MAX_Z:
            raise RespmatchError(f"formula {formula!r}: element {symbol} is outside Z 1..{MAX_Z}")
        if count > 0:
            numbers[z] = numbers.get(z, 0) + count
    if not numbers:
        raise RespmatchError(f"unknown formula {formula!r}: it has no atoms")
    if known_elements is not None:
        known = set(known_elements)
        missing = set(numbers) - known
        if missing:
            raise missing_elements_error(missing, known)
    return [z for z in sorted(numbers) for _ in range(numbers[z])]


def start_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of start ``index`` of search ``seed``, independent of how starts are batched."""
    return np.random.default_rng([seed, index])


def composition_volume(numbers: Iterable[int], element_volumes: dict[int, float]) -> float:
    """Cell volume (Å³) as the sum of per-element volumes fitted on the training crystals.

    A single element may have a fitted volume of zero (the non-negative fit can give its share
    to the elements it always appears with); only a composition with no volume at all is refused.
    """
    numbers = list(numbers)
    missing = sorted({z for z in numbers if z not in element_volumes})
    if missing:
        raise RespmatchError(f"the model has no volume for element {symbols(missing)}; give --volume-per-atom")
    total = sum(element_volumes[z] for z in numbers)
    if not total > 0:
        raise RespmatchError(
            f"the model's fitted volume of {symbols(numbers)} is zero: it was trained without "
            "crystals containing these elements; give --volume-per-atom"
        )
    return total


def volume_per_atom_for(
    index: int, n: int, volume_per_atom: float | tuple[float, float]
) -> float:
    """Volume per atom of start ``index`` of ``n``: a range is swept evenly, endpoints included."""
    if not isinstance(volume_per_atom, tuple):
        return float(volume_per_atom)
    if not 0 <= index < n:
        raise ValueError(f"start index {index} is outside 0..{n - 1}")
    low, high = volume_per_atom
    if n == 1:
        return float(low)
    t = index / (n - 1)
    # Written as a weighted mean so that both endpoints come out exactly.
    return float(low * (1 - t) + high * t)


def parse_volume_range(text: str) -> float | tuple[float, float]:
    """CLI volume per atom: ``"5.0"`` (one value) or ``"3.8:5.6"`` (a range to sweep)."""
    bad = ValueError(
        f"volume per atom must be a positive number or a range A:B with 0 < A ≤ B, got {text!r}"
    )
    try:
        values = [float(part) for part in text.split(":")]
    except ValueError:
        raise bad from None
    if len(values) > 2 or not all(math.isfinite(v) and v > 0 for v in values):
        raise bad
    if len(values) == 1:
        return values[0]
    if values[0] > values[1]:
        raise bad
    return values[0], values[1]


def molecule_start(
    numbers: Sequence[int],
    rng: np.random.Generator,
    box: tuple[float, float, float] = (10.0, 5.0, 5.0),
    min_distance: float = 0.7,
    max_attempts: int = 1000,
) -> Atoms:
    """Atoms placed uniformly in an open box, redrawn while closer than ``min_distance``."""
    high = np.asarray(box, dtype=float)
    positions = np.empty((len(numbers), 3))
    for i in range(len(numbers)):
        for _ in range(max_attempts):
            candidate = rng.uniform(0.0, high)
            if i == 0 or np.linalg.norm(positions[:i] - candidate, axis=1).min() >= min_distance:
                positions[i] = candidate
                break
        else:
            size = "×".join(f"{edge:g}" for edge in box)
            raise RespmatchError(
                f"box {size} Å too small for {len(numbers)} atoms "
                f"at minimum distance {min_distance:g} Å"
            )
    return Atoms(numbers=list(numbers), positions=positions, pbc=False)


def _lattice_translations(cell: np.ndarray, cutoff: float) -> np.ndarray:
    """Cartesian lattice translations that can bring a minimum-image pair within ``cutoff``.

    With fractional differences wrapped to [-½, ½], an image n is within the cutoff only if
    |f_i + n_i| · h_i < cutoff for the spacing h_i between lattice planes, so |n_i| ≤
    ceil(cutoff / h_i) suffices even for a strongly skewed cell.
    """
    volume = abs(np.linalg.det(cell))
    spacings = volume / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reach = np.ceil(cutoff / spacings).astype(int)
    steps = itertools.product(*(range(-k, k + 1) for k in reach))
    return np.array(list(steps), dtype=float) @ cell


def crystal_start(
    numbers: Sequence[int],
    volume: float,
    rng: np.random.Generator,
    min_distance: float = 1.0,
    distortion: float = 0.5,
    max_attempts: int = 1000,
) -> Atoms:
    """Randomly distorted cell of exactly ``volume`` Å³ with atoms at random, periodic.

    A cell whose shortest lattice vector is below ``min_distance`` would put every atom too close
    to its own image, so such a cell is redrawn like one with det ≤ 0.
    """
    too_small = ValueError(
        f"cell of {volume:g} Å³ too small for {len(numbers)} atoms "
        f"at minimum distance {min_distance:g} Å"
    )
    if not volume > 0:
        raise RespmatchError(f"cell volume must be positive, got {volume:g} Å³")
    edge = volume ** (1 / 3)
    for _ in range(max_attempts):
        cell = edge * np.eye(3) + rng.uniform(-0.5, 0.5, (3, 3)) * distortion * edge
        det = np.linalg.det(cell)
        if det <= 0:
            continue
        cell *= (volume / det) ** (1 / 3)
        translations = _lattice_translations(cell, min_distance)
        lengths = np.linalg.norm(translations, axis=1)
        if lengths[lengths > 0].min(initial=np.inf) >= min_distance:
            break
    else:
        raise too_small
    fractional = np.empty((len(numbers), 3))
    for i in range(len(numbers)):
        for _ in range(max_attempts):
            candidate = rng.random(3)
            difference = candidate - fractional[:i]
            difference -= np.round(difference)
            images = (difference @ cell)[:, None, :] + translations[None, :, :]
            if i == 0 or np.linalg.norm(images, axis=2).min() >= min_distance:
                fractional[i] = candidate
                break
        else:
            raise too_small
    return Atoms(numbers=list(numbers), scaled_positions=fractional, cell=cell, pbc=True)
