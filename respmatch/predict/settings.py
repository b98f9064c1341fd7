"""What a prediction is asked to do: the funnel's sizes and the physics' settings, checked at once.

Defaults are chosen by measurement (docs/results.md, "Predict: the funnel (issue 23)").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from respmatch.errors import RespmatchError
from respmatch.predict.shortlist import DEFAULT_SCORE, check_score
from respmatch.recheck.potentials import potential_info


@dataclass(frozen=True)
class PredictSettings:
    tries: int = 100  # M: search tries per formula
    keep: int = 10  # K: distinct structures shortlisted for the physics
    relax: int = 2  # of those, relaxed fully (the lowest after the screen)
    score: str = DEFAULT_SCORE  # the shortlist's pre-score (predict.shortlist)
    potential: str = "sevennet-0"
    screen_steps: int = 40  # the cheap stage: a short relaxation of every shortlisted structure
    fmax: float = 0.05  # eV/Å, the full relaxation's threshold (atoms and cell)
    max_steps: int = 150  # of the full relaxation, after the screen's
    symmetry: float = 0.5  # share of symmetric search starts (space groups from the model's prior)
    space_groups: str = "prior"
    seed: int = 0

    def __post_init__(self):
        """Refused here, one line, before any work."""
        for name in ("tries", "keep", "relax", "screen_steps", "max_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RespmatchError(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.keep > self.tries:
            raise RespmatchError(f"cannot shortlist {self.keep} distinct structures from {self.tries} tries per formula")
        if self.relax > self.keep:
            raise RespmatchError(f"cannot relax {self.relax} of a shortlist of {self.keep}: relax at most keep")
        if not (isinstance(self.fmax, (int, float)) and 0 < self.fmax < math.inf):
            raise RespmatchError(f"fmax must be a positive number of eV/Å, got {self.fmax!r}")
        if not 0 <= self.symmetry <= 1:
            raise RespmatchError(f"symmetry is the share of symmetric starts, 0 to 1; got {self.symmetry!r}")
        check_score(self.score)
        if potential_info(self.potential).kind != "crystal":
            raise RespmatchError(f"potential {self.potential} is for molecules; predict needs a crystal potential")

    def parameters(self) -> dict:
        return asdict(self)
