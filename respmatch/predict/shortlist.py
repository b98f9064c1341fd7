"""The shortlist: which distinct structures of a formula the physics sees, by a pre-score.

A group (``distinct.Group``) is what the search found: its lowest Ẽ per atom and how many tries
found it.  Ẽ alone ranks the right structure first too rarely, and a structure many tries fall
into is a wide basin of the learned landscape, often the real one (docs/results.md, "Predict:
the funnel").  The pre-scores, lower first:

- ``energy``: the lowest Ẽ of the group;
- ``count``: the most-found group first (ties: lower Ẽ);
- ``basin``: Ẽ − τ·ln(count), τ = ``BASIN_TAU``: Ẽ with a bonus for a wide basin, as a free
  energy counts the states of a minimum;
- ``mixed``: the lowest-Ẽ and the most-found groups taken in turn (each list's next group not
  yet taken).
"""

from __future__ import annotations

import math

from respmatch.errors import RespmatchError

BASIN_TAU = 0.02  # eV/atom of Ẽ one e-fold of finds is worth
SCORES = ("energy", "count", "basin", "mixed")
DEFAULT_SCORE = "count"  # the most reach at K = 10, M = 100 on held-out MP-20 (docs/results.md)


def by_energy(groups: list[dict]) -> list[int]:
    return sorted(range(len(groups)), key=lambda g: groups[g]["energy"])


def by_count(groups: list[dict]) -> list[int]:
    return sorted(range(len(groups)), key=lambda g: (-groups[g]["count"], groups[g]["energy"]))


def by_basin(groups: list[dict]) -> list[int]:
    return sorted(range(len(groups)), key=lambda g: groups[g]["energy"] - BASIN_TAU * math.log(groups[g]["count"]))


def by_turns(groups: list[dict]) -> list[int]:
    order, taken = [], set()
    for pair in zip(by_energy(groups), by_count(groups)):
        for g in pair:
            if g not in taken:
                taken.add(g)
                order.append(g)
    return order


ORDERS = {"energy": by_energy, "count": by_count, "basin": by_basin, "mixed": by_turns}


def check_score(score: str) -> str:
    if score not in ORDERS:
        raise RespmatchError(f"unknown shortlist score {score!r} (choose from {', '.join(SCORES)})")
    return score


def shortlist(groups: list[dict], keep: int, score: str = DEFAULT_SCORE) -> list[int]:
    """Positions (in ``groups``) of the ``keep`` groups the score puts first, best first; all of
    them when a formula has fewer distinct structures."""
    return ORDERS[check_score(score)](groups)[:keep]
