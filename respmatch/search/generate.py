"""Random structure search on a trained model: random starts, batched relaxation, streamed store.

Protocols of the paper (DESIGN §1.3) are presets; any of their settings can be overridden.
Structure i of a run depends only on (seed, i), so a resumed run simply relaxes the indices that
are not in the store yet: nothing stored is lost or run twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from ase import Atoms
from tqdm.auto import tqdm

from respmatch.model import Denoiser, load_model
from respmatch.search.relax import BatchRelaxer, Job, Relaxed, Stage
from respmatch.search.starts import (
    composition_volume,
    crystal_start,
    molecule_start,
    parse_composition,
    start_rng,
    volume_per_atom_for,
)
from respmatch.store import RunStore


@dataclass(frozen=True)
class SearchPreset:
    start: str  # "molecule" (atoms in a box) or "crystal" (atoms in a random cell)
    stages: tuple[Stage, ...]
    box: tuple[float, float, float] = (10.0, 5.0, 5.0)  # Å, molecule starts
    min_distance: float = 1.0  # Å between start atoms
    distortion: float = 0.5  # random cell distortion, in units of the cubic edge


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
        raise ValueError(f"unknown preset {name!r} (choose from {sorted(SEARCH_PRESETS)})")
    preset = SEARCH_PRESETS[name]
    stages = list(preset.stages)
    top = {}
    for key, value in overrides.items():
        stage_name, dot, field = key.partition(".")
        if not dot:
            if key not in SearchPreset.__dataclass_fields__ or key == "stages":
                raise ValueError(f"unknown search option {key!r}")
            top[key] = tuple(value) if isinstance(value, list) else value
            continue
        names = [s.name for s in stages]
        if stage_name in names:
            position = names.index(stage_name)
        elif stage_name.startswith("stage") and stage_name[5:].isdigit() and int(stage_name[5:]) < len(stages):
            position = int(stage_name[5:])
        else:
            raise ValueError(f"unknown stage {stage_name!r} in option {key!r} (stages: {names})")
        if field not in Stage.__dataclass_fields__:
            raise ValueError(f"unknown stage field {field!r} in option {key!r}")
        stages[position] = replace(stages[position], **{field: value})
    return replace(preset, stages=tuple(stages), **top)


def start_factory(
    model: Denoiser,
    composition: str,
    n: int,
    preset: str | None = None,
    volume_per_atom: float | tuple[float, float] | None = None,
    seed: int = 0,
    options: dict | None = None,
) -> tuple[str, SearchPreset, Callable[[int], Job]]:
    """The preset name, its settings and ``start(i)``: structure i of ``n`` as a relaxation job.

    Structure i depends only on (seed, i), whatever the batch or the order structures run in.
    """
    numbers = parse_composition(composition, known_elements=model.config.elements)
    if preset is None:
        trained_on = model.checkpoint.get("training", {}).get("preset")
        preset = "fixed-volume" if volume_per_atom else trained_on or "crystal"
    settings = search_preset(preset, **(options or {}))
    if settings.start == "crystal" and volume_per_atom is None:
        if preset.startswith("fixed-volume"):
            raise ValueError("the fixed-volume preset needs --volume-per-atom V or A:B")
        # Fails early if an element has no volume; the same cell volume for every start.
        cell_volume = composition_volume(
            numbers, dict(zip(model.config.elements, model.element_volumes.tolist()))
        )

    def start(index: int) -> Job:
        rng = start_rng(seed, index)
        try:
            if settings.start == "molecule":
                atoms = molecule_start(numbers, rng, settings.box, settings.min_distance)
            else:
                volume = (
                    cell_volume
                    if volume_per_atom is None
                    else volume_per_atom_for(index, n, volume_per_atom) * len(numbers)
                )
                atoms = crystal_start(numbers, volume, rng, settings.min_distance, settings.distortion)
        except ValueError as error:
            raise ValueError(f"{composition} structure {index} (seed {seed}): {error}") from error
        return Job(key=index, atoms=atoms, stages=settings.stages, rng=rng)

    return preset, settings, start


def result_record(result: Relaxed, index: int, seed: int) -> dict:
    """What is kept of each relaxed structure besides its atoms: the store's ``INFO_KEYS``, as
    store columns (``generate``) or ``atoms.info`` (``search_compositions``)."""
    return {
        "index": index,
        "seed": seed,
        "pseudo_energy_per_atom": result.energy / len(result.atoms),
        "converged": result.converged,
        "steps": result.steps,
        "stage": result.stage,
    }


def generate(
    model_path: str | Path,
    composition: str,
    n: int,
    out: str | Path,
    *,
    preset: str | None = None,
    volume_per_atom: float | tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    dtype=torch.float32,
    resume: bool = False,
    progress: bool = True,
    options: dict | None = None,
) -> dict:
    """Relax ``n`` random structures of ``composition`` on the model and store them in ``out``."""
    if n <= 0:
        raise ValueError(f"n must be a positive number of structures, got {n}")
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    model = load_model(model_path, device=device, dtype=dtype)
    preset, settings, start = start_factory(model, composition, n, preset, volume_per_atom, seed, options)
    start(0)  # a box or cell too small for the composition fails before anything is written
    parameters = {
        "composition": composition,
        "preset": preset,
        "seed": seed,
        "n": n,
        "volume_per_atom": volume_per_atom,
        # A volume range is spread over n structures: extending such a run would move the volume
        # of every index not yet stored, so n is part of its identity (the store refuses a change).
        "volume_sweep_size": n if isinstance(volume_per_atom, tuple) else None,
        "model": str(model_path),
        "model_sha256": model.checkpoint["sha256"],
        "search": asdict(settings),
        "dtype": str(dtype).replace("torch.", ""),
        "batch_size": batch_size,
        "device": device,
    }
    store = RunStore(out, parameters, resume=resume)
    done = store.done_indices()
    todo = [i for i in range(n) if i not in done]
    relaxer = BatchRelaxer(model, batch_size=batch_size, device=device, dtype=dtype)
    bar = tqdm(total=n, initial=n - len(todo), desc="generate", unit="structure", disable=not progress)
    started, finished, converged = time.perf_counter(), 0, 0
    for result in relaxer.run(start(i) for i in todo):
        store.write(result.atoms, **result_record(result, result.key, seed))
        finished += 1
        converged += result.converged
        elapsed = time.perf_counter() - started
        bar.update(1)
        bar.set_postfix(converged=f"{converged / finished:.0%}", per_s=f"{finished / elapsed:.2f}")
    bar.close()
    seconds = time.perf_counter() - started
    return {
        "out": str(out),
        "relaxed": finished,
        "stored": len(store),
        "converged_share": converged / finished if finished else float("nan"),
        "seconds": seconds,
        "structures_per_second": finished / seconds if seconds > 0 else float("nan"),
        "model_calls": relaxer.model_calls,
    }


def search_compositions(
    model: Denoiser,
    tries: dict[str, int],
    *,
    preset: str | None = None,
    volume_per_atom: float | tuple[float, float] | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    dtype=torch.float32,
    options: dict | None = None,
    progress: bool = True,
) -> Iterator[Atoms]:
    """Relax ``tries[formula]`` structures of each composition, all through one shared batch.

    Many compositions with few tries each (crystal structure prediction, a molecule benchmark)
    keep the batch full this way.  Try i of a composition is the structure ``generate`` makes
    for index i with the same seed.  Each structure is yielded as it finishes, with
    ``info``: composition, index, seed, pseudo_energy_per_atom, converged, steps, stage.
    """
    factories = {
        formula: start_factory(model, formula, n, preset, volume_per_atom, seed, options)[2]
        for formula, n in tries.items()
    }
    for formula, start in factories.items():
        start(0)  # every composition fails early, before any relaxation runs
    jobs = (
        replace(factories[formula](i), key=(formula, i)) for formula, n in tries.items() for i in range(n)
    )
    relaxer = BatchRelaxer(model, batch_size=batch_size, device=device, dtype=dtype)
    total = sum(tries.values())
    with tqdm(total=total, desc="search", unit="structure", disable=not progress) as bar:
        for result in relaxer.run(jobs):
            formula, index = result.key
            result.atoms.info.update(composition=formula, **result_record(result, index, seed))
            bar.update(1)
            yield result.atoms
