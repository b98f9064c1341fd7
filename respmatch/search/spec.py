"""What a search is: protocol presets and the frozen, picklable specification of a run.

A ``SearchSpec`` holds everything that fixes structure i of a run (composition, preset settings
with their overrides, volume, seed, and the checksum of the model it is meant for), so
``spec.start(i)`` makes the same start in any process, whatever the batch, the order or the
worker: a resumed run or a Dask worker needs only the spec and the index.

Protocols of the paper (docs/design.md §1.3) are presets; any of their settings can be
overridden.  The preset's ``start`` names how a start is drawn (``START_KINDS``); a new kind of
start is one more entry there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from ase import Atoms

from respmatch.config import checked_options
from respmatch.errors import RespmatchError
from respmatch.model import Denoiser, model_checksum
from respmatch.search.relax import Job, Stage
from respmatch.search.starts import (
    composition_volume,
    crystal_start,
    molecule_start,
    parse_composition,
    start_rng,
    volume_per_atom_for,
)

if TYPE_CHECKING:
    from respmatch.search.symmetric import SpaceGroupChoice


@dataclass(frozen=True)
class SearchPreset:
    start: str  # a key of START_KINDS: "molecule" (atoms in a box), "crystal" (a random cell)
    stages: tuple[Stage, ...]
    box: tuple[float, float, float] = (10.0, 5.0, 5.0)  # Å, molecule starts
    min_distance: float = 1.0  # Å between start atoms
    distortion: float = 0.5  # random cell distortion, in units of the cubic edge
    # Symmetric starts (``search.symmetric``): the share of crystal starts drawn in a random
    # space group with pyxtal (the others are the P1 cells above), the groups they are drawn
    # from, and whether the relaxation keeps each start's symmetry (as ASE's FixSymmetry).
    symmetry: float = 0.0
    space_groups: str = "prior"
    keep_symmetry: bool = False


SEARCH_PRESETS = {
    "molecule": SearchPreset(
        start="molecule",
        min_distance=0.7,
        stages=(
            Stage("relax", fmax=1e-3, max_steps=500),
            Stage("kick-relax", fmax=2e-4, max_steps=1000, kick=0.75),
        ),
    ),
    "crystal": SearchPreset(
        start="crystal",
        stages=(
            Stage("constant-volume", fmax=0.05, max_steps=100, cell="constant-volume"),
            Stage("full-cell", fmax=0.01, max_steps=2000, cell="full"),
        ),
    ),
    "fixed-volume": SearchPreset(
        start="crystal",
        stages=(
            Stage("constant-volume", fmax=5e-4, max_steps=500, cell="constant-volume", max_step=0.01),
        ),
    ),
    # Ours, not the paper's: with 0.01 Å steps most random 8–12-atom cells are still far from a
    # minimum after 500 steps (12% converged on the one-shot model).  A coarse pre-relaxation
    # with 0.1 Å steps first, then the paper's fine stage, converges 90% in fewer total steps.
    "fixed-volume-fast": SearchPreset(
        start="crystal",
        stages=(
            Stage("coarse", fmax=0.02, max_steps=300, cell="constant-volume", max_step=0.1),
            Stage("constant-volume", fmax=5e-4, max_steps=500, cell="constant-volume", max_step=0.01),
        ),
    ),
}


def search_preset(name: str, **overrides) -> SearchPreset:
    """A preset with overrides: preset fields (``min_distance=0.8``) or stage fields named
    ``STAGE.FIELD`` or ``stageN.FIELD`` (``kick-relax.fmax=1e-4``, ``stage0.max_steps=50``)."""
    if name not in SEARCH_PRESETS:
        raise RespmatchError(f"unknown preset {name!r} (choose from {sorted(SEARCH_PRESETS)})")
    preset = SEARCH_PRESETS[name]
    stages = list(preset.stages)
    top = {}
    for key, value in overrides.items():
        stage_name, dot, field = key.partition(".")
        if not dot:
            if key == "stages":
                raise RespmatchError("unknown search option 'stages' (set a stage's fields as STAGE.FIELD)")
            top.update(checked_options(SearchPreset, {key: value}, "--option"))
            continue
        names = [s.name for s in stages]
        if stage_name in names:
            position = names.index(stage_name)
        elif stage_name.startswith("stage") and stage_name[5:].isdigit() and int(stage_name[5:]) < len(stages):
            position = int(stage_name[5:])
        else:
            raise RespmatchError(f"unknown stage {stage_name!r} in option {key!r} (stages: {names})")
        if field not in Stage.__dataclass_fields__:
            raise RespmatchError(f"unknown stage field {field!r} in option {key!r}")
        stages[position] = replace(
            stages[position], **checked_options(Stage, {field: value}, "--option", f"{stage_name}.")
        )
    settings = replace(preset, stages=tuple(stages), **top)
    if settings.start not in START_KINDS:
        raise RespmatchError(f"unknown start {settings.start!r} (choose from {sorted(START_KINDS)})")
    return settings


def _molecule(spec: SearchSpec, index: int, rng: np.random.Generator) -> Atoms:
    return molecule_start(spec.numbers, rng, spec.settings.box, spec.settings.min_distance)


def _crystal(spec: SearchSpec, index: int, rng: np.random.Generator) -> Atoms:
    settings = spec.settings
    if settings.symmetry:
        # Here, not at the top: the symmetric starts' modules (spglib, pyxtal, the evaluation
        # package) are for the runs that ask for them, not the start-up of every run.
        from respmatch.search.symmetric import is_symmetric, symmetric_start

        if is_symmetric(index, settings.symmetry):
            return symmetric_start(spec.numbers, spec.cell_volume(index), rng, spec.space_groups, settings.min_distance)
    return crystal_start(spec.numbers, spec.cell_volume(index), rng, settings.min_distance, settings.distortion)


# How a start is drawn: (spec, index, rng) -> Atoms, every random number from rng.
START_KINDS: dict[str, Callable[[SearchSpec, int, np.random.Generator], Atoms]] = {
    "molecule": _molecule,
    "crystal": _crystal,
}


def default_preset(model: Denoiser, volume_per_atom) -> str:
    """Fixed volume when one is given, else crystal for a model with fitted element volumes
    (it was trained on crystals), molecule for one without."""
    if volume_per_atom is not None:
        return "fixed-volume"
    return "crystal" if bool((model.element_volumes > 0).any()) else "molecule"


@dataclass(frozen=True)
class SearchSpec:
    """Structure i of a run, for every i in 0..n-1; build one with ``SearchSpec.build``."""

    composition: str
    n: int
    preset: str
    settings: SearchPreset
    numbers: tuple[int, ...]  # atomic numbers of one start, sorted
    seed: int
    volume_per_atom: float | tuple[float, float] | None  # Å³/atom: one value or a range swept over n
    model_volume: float | None  # Å³ per cell from the model's element volumes (no volume given)
    model_sha256: str  # the model this run is for (``model_checksum``)
    space_groups: SpaceGroupChoice | None = None  # of symmetric starts, when there are any

    @classmethod
    def build(
        cls,
        model: Denoiser,
        composition: str,
        n: int,
        preset: str | None = None,
        volume_per_atom: float | tuple[float, float] | None = None,
        seed: int = 0,
        options: dict | None = None,
    ) -> SearchSpec:
        """Check everything a start needs (elements, volume, room for the atoms) before any work."""
        if n <= 0:
            raise RespmatchError(f"n must be a positive number of structures, got {n}")
        numbers = tuple(parse_composition(composition, known_elements=model.config.elements))
        preset = preset or default_preset(model, volume_per_atom)
        settings = search_preset(preset, **(options or {}))
        model_volume = None
        if settings.start != "molecule" and volume_per_atom is None:
            if preset.startswith("fixed-volume"):
                raise RespmatchError("the fixed-volume preset needs --volume-per-atom V or A:B")
            # Fails early if an element has no volume; the same cell volume for every start.
            model_volume = composition_volume(
                numbers, dict(zip(model.config.elements, model.element_volumes.tolist()))
            )
        if settings.keep_symmetry and any(stage.anneal_steps for stage in settings.stages):
            raise RespmatchError("--keep-symmetry cannot be combined with annealing stages: their noise breaks the symmetry")
        space_groups = None
        if settings.symmetry or settings.keep_symmetry:
            if settings.start == "molecule":
                raise RespmatchError("symmetric starts and --keep-symmetry are for crystals, not molecules")
            if not 0 <= settings.symmetry <= 1:
                raise RespmatchError(f"--symmetry is the share of symmetric starts, 0 to 1; got {settings.symmetry}")
            # Checks the spec (and that some group fits the composition) even with no symmetric start.
            from respmatch.search.symmetric import space_group_choice  # as in ``_crystal``

            prior = getattr(model, "checkpoint", {}).get("training", {}).get("space_groups")
            space_groups = space_group_choice(numbers, settings.space_groups, prior)
        spec = cls(
            composition, n, preset, settings, numbers, seed, volume_per_atom, model_volume, model_checksum(model),
            space_groups,
        )
        spec.start(0)  # a box or cell too small for the composition fails here
        return spec

    def cell_volume(self, index: int) -> float:
        """Å³ of start ``index``'s cell."""
        if self.volume_per_atom is None:
            return self.model_volume
        return volume_per_atom_for(index, self.n, self.volume_per_atom) * len(self.numbers)

    def start(self, index: int) -> Atoms:
        """Start ``index``: the same atoms for the same (spec, index) in any process."""
        return self.job(index).atoms

    def job(self, index: int, key=None) -> Job:
        """Start ``index`` as a relaxation job; its kicks draw from the same (seed, index) stream."""
        rng = start_rng(self.seed, index)
        try:
            atoms = START_KINDS[self.settings.start](self, index, rng)
        except ValueError as error:
            raise RespmatchError(f"{self.composition} structure {index} (seed {self.seed}): {error}") from error
        return Job(key=index if key is None else key, atoms=atoms, stages=self.settings.stages, rng=rng,
                   keep_symmetry=self.settings.keep_symmetry)

    def parameters(self) -> dict:
        """What defines the run, for the store's metadata (a resume must match it)."""
        return {
            "composition": self.composition,
            "preset": self.preset,
            "seed": self.seed,
            "n": self.n,
            "volume_per_atom": self.volume_per_atom,
            # A volume range is spread over n structures: extending such a run would move the
            # volume of every index not yet stored, so n is part of its identity.
            "volume_sweep_size": self.n if isinstance(self.volume_per_atom, tuple) else None,
            "model_sha256": self.model_sha256,
            "search": asdict(self.settings),
        }
