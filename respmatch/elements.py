"""Which elements respmatch handles, and the one message for an element a model lacks."""

from __future__ import annotations

from collections.abc import Iterable

from ase.data import chemical_symbols

from respmatch.errors import RespmatchError

MAX_Z = 94  # Pu; heavier elements have (almost) no data to train on


def symbols(numbers: Iterable[int]) -> str:
    """'H, C, O' for atomic numbers (sorted); out-of-range numbers as 'Z=n'."""
    return ", ".join(
        chemical_symbols[z] if 0 < z <= MAX_Z else f"Z={z}" for z in sorted(set(numbers))
    )


def missing_elements_error(missing: Iterable[int], known: Iterable[int]) -> RespmatchError:
    return RespmatchError(
        f"the model was not trained on element(s) {symbols(missing)}; it knows {symbols(known)}"
    )
