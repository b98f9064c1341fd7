"""What a molecule prediction is asked to do, and which kind of prediction a model makes.

A model trained on crystals (it has fitted element volumes) predicts crystals through the
search → distinct → physics funnel (``predict.settings``); a model trained on molecules predicts
molecules: valid molecules on demand → GFN2-xTB → isomers and conformers (``predict.molecules``).
An option of the other kind's funnel is refused in one line, before any work.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from respmatch.errors import RespmatchError
from respmatch.model import as_model
from respmatch.predict.settings import PredictSettings
from respmatch.recheck.potentials import potential_info
from respmatch.search.spec import default_preset


@dataclass(frozen=True)
class MoleculeSettings:
    # N: strictly valid molecules searched per formula.  50 cost 1 to 2.5 CPU-minutes of search for
    # a 12-atom QM9 formula on one core with the shipped qm9 model (docs/results.md, "Predict:
    # molecules"); more, with --resume --n, once a first look is worth it.
    n: int = 50
    max_kicks: int = 3  # an invalid try is kicked and relaxed again this often, then replaced
    max_tries: int | None = None  # fresh starts per formula before giving up on N (default 20 N)
    potential: str = "gfn2-xtb"
    fmax: float = 0.01  # eV/Å: tight, so that two tries in one minimum align within ``rmsd``
    max_steps: int = 500  # of ASE FIRE on the positions (the re-check's molecule relaxation)
    rmsd: float = 0.125  # Å: two geometries of one isomer closer than this are one conformer
    # Å, where a search start's atoms are placed: the QM9 benchmark's box.  The generator's 10×5×5 Å
    # leaves atoms beyond the cutoff of all others; a smaller box cut fragments from 60% to 13% of
    # tries and doubled strict validity on QM7 (docs/results.md, "b. Molecules (QM7)").
    box: tuple[float, float, float] = (7.0, 4.5, 4.5)
    seed: int = 0

    def __post_init__(self):
        """Refused here, one line, before any work."""
        least = {"n": 1, "max_kicks": 0, "max_tries": 1, "max_steps": 1, "seed": 0}
        for name, minimum in least.items():
            value = getattr(self, name)
            if name == "max_tries" and value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise RespmatchError(f"{name} must be a whole number of at least {minimum}, got {value!r}")
        for name, value in (("fmax", self.fmax), ("rmsd", self.rmsd), *(("box", edge) for edge in self.box)):
            if not (isinstance(value, (int, float)) and 0 < value < math.inf):
                raise RespmatchError(f"{name} must be a positive number, got {value!r}")
        if len(self.box) != 3:
            raise RespmatchError(f"box is three edges in Å, got {self.box!r}")
        if potential_info(self.potential).kind != "molecule":
            raise RespmatchError(f"potential {self.potential} is for crystals; a molecule prediction needs "
                                 "gfn2-xtb or gfn1-xtb")

    @property
    def tries(self) -> int:
        """Fresh starts per formula at most."""
        return 20 * self.n if self.max_tries is None else self.max_tries

    def parameters(self) -> dict:
        return asdict(self)


def model_kind(model, device: str = "cpu") -> str:
    """"molecule" or "crystal": what the model was trained on, as generation decides its preset."""
    return "molecule" if default_preset(as_model(model, device), None) == "molecule" else "crystal"


def settings_for(kind: str, given: dict) -> PredictSettings | MoleculeSettings:
    """The settings of a ``kind`` prediction from the options a user gave (name -> value);
    an option of the other kind's funnel is refused, naming it."""
    settings = MoleculeSettings if kind == "molecule" else PredictSettings
    names = {f.name for f in fields(settings)}
    for name in given:
        if name not in names:
            raise other_kind(kind, name)
    return settings(**given)


def check_kind(kind: str, settings, **outputs: str | Path | None) -> None:
    """Refuse settings of the other kind, and outputs (``cif_dir=...``) that only the other kind
    writes, in one line."""
    wanted = MoleculeSettings if kind == "molecule" else PredictSettings
    if settings is not None and not isinstance(settings, wanted):
        raise RespmatchError(f"this model predicts {kind}s; give {wanted.__name__}, not {type(settings).__name__}")
    for name, value in outputs.items():
        if value is not None:
            raise other_kind(kind, name)


def other_kind(kind: str, option: str) -> RespmatchError:
    other = "crystals" if kind == "molecule" else "molecules"
    return RespmatchError(f"--{option.replace('_', '-')} is for {other}; this model predicts {kind}s")
