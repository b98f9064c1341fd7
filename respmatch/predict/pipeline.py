"""``respmatch.predict``: search → distinct → shortlist → screen → relax → final, each stage stored.

Every stage writes its results into the run database as they are known (the tries one row each,
the rest as typed stage records, ``predict.records``) and first reads back what is there, so a
run killed anywhere and started again with ``resume=True`` repeats no stored work: only tries,
groups, relaxations and rankings that are missing are computed.  Each stage is begun with the
settings its records depend on, so a resume under other settings is refused in one line.  All
formulas go through each stage together, so the RM search and the potential keep their batches
full.

Time per stage is kept in the run too (wall and this process's CPU seconds; work done on Dask
workers shows in wall time only).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import torch
from ase import Atoms
from tqdm.auto import tqdm

from respmatch.builtin import model_path
from respmatch.cluster import dask_client
from respmatch.errors import RespmatchError
from respmatch.files import check_output, check_output_folder
from respmatch.matching import ENERGY_WINDOW, MATCHER_TOLERANCES
from respmatch.model import as_model
from respmatch.model.checkpoint import torch_device
from respmatch.predict import groups as grouping
from respmatch.predict import records
from respmatch.predict.funnel import funnel_counts, stage_times
from respmatch.predict.molecule_settings import check_kind, model_kind
from respmatch.predict.molecules import predict_molecules
from respmatch.predict.output import ranking_table, write_cifs
from respmatch.predict.physics import RelaxSettings, relax_candidates
from respmatch.predict.records import (
    STAGES, TIME, Distinct, Ranking, Relaxation, Shortlist, candidate, group_of,
)
from respmatch.predict.settings import PredictSettings
from respmatch.predict.shortlist import shortlist
from respmatch.recheck.potentials import check_elements, package_version
from respmatch.search.generate import check_batch_size, relaxed
from respmatch.search.spec import SearchSpec
from respmatch.run import RunStore

T = TypeVar("T")


def predict(
    formulas: str | list[str],
    model="mp20",
    out: str | Path = "predict.db",
    *,
    settings: PredictSettings | None = None,
    resume: bool = False,
    cif_dir: str | Path | None = None,
    sdf_dir: str | Path | None = None,
    xyz_dir: str | Path | None = None,
    report: str | Path | None = None,
    batch_size: int = 64,
    physics_batch_size: int | None = None,
    device: str = "cpu",
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    progress: bool = True,
) -> dict:
    """Predict the structure of each formula (one cell, e.g. ``SrTiO3`` or ``Sr2Ti2O6``).

    Returns ``{"out", "rankings": {formula: [ranked structure, ...]}, "funnel": {formula:
    counts}, "time": {stage: seconds}, "table"}``; a ranked structure holds its physical energy
    per atom, the energy above the formula's lowest, space group, how many tries found it
    (``found``), its lowest Ẽ and how many shortlisted candidates relaxed into it.  ``cif_dir``:
    one CIF per ranked structure, ``cif_dir/FORMULA/RANK.cif``; ``report``: the HTML report.
    ``workers``/``scheduler``/``client``: the search and the physics on Dask workers.

    A model trained on molecules predicts molecules instead (``predict.molecules``: settings
    ``MoleculeSettings``, outputs ``sdf_dir``/``xyz_dir``); the other kind's settings are refused.
    """
    formulas = list(dict.fromkeys([formulas] if isinstance(formulas, str) else formulas))
    if not formulas:
        raise RespmatchError("give at least one formula")
    kind = model_kind(model)
    if kind == "molecule":
        check_kind(kind, settings, cif_dir=cif_dir, physics_batch_size=physics_batch_size, workers=workers,
                   scheduler=scheduler, client=client)
        return predict_molecules(formulas, model, out, settings=settings, resume=resume, sdf_dir=sdf_dir, xyz_dir=xyz_dir,
                                 report=report, batch_size=batch_size, device=device, progress=progress)
    check_kind(kind, settings, sdf_dir=sdf_dir, xyz_dir=xyz_dir)
    settings = settings or PredictSettings()
    physics_batch_size = 16 if physics_batch_size is None else physics_batch_size
    check_batch_size(batch_size)
    check_batch_size(physics_batch_size)
    torch_device(device)
    model_name = str(model_path(model)) if isinstance(model, (str, Path)) else None
    check_output(out, inputs=[model_name] if model_name else [])
    if cif_dir is not None:
        check_output_folder(cif_dir, "--cif-dir")
    if report is not None:
        check_output(report, inputs=[out], option="--report")
    rm_model = as_model(model, device)
    options = {"symmetry": settings.symmetry, "space_groups": settings.space_groups}
    specs = {f: SearchSpec.build(rm_model, f, settings.tries, "crystal", None, settings.seed, options) for f in formulas}
    package_version(settings.potential)
    for formula, spec in specs.items():
        check_elements(settings.potential, formula, spec.numbers)
    first = specs[formulas[0]]
    parameters = {
        "formulas": formulas,
        **settings.parameters(),
        "preset": "crystal",
        "search": first.parameters()["search"],
        "model": model_name,
        "model_sha256": first.model_sha256,
        "batch_size": batch_size,
        "device": device,
    }
    with (RunStore(out, parameters, resume=resume, stages=stage_settings(settings)) as runs,
          dask_client(workers, scheduler) as own_client):
        funnel = Funnel(runs, specs, settings, client or own_client, progress)
        funnel.search(rm_model, batch_size, device)
        rankings = funnel.physics(RelaxSettings(settings.potential, settings.fmax, settings.max_steps,
                                                physics_batch_size, device))
        spent = stage_times(runs.stages)
        summary = {"out": str(out), "rankings": rankings, "funnel": funnel_counts(runs.stages, formulas, settings.tries),
                   "time": {stage: spent.get(stage) for stage in STAGES}}
        summary["table"] = ranking_table(rankings, summary["funnel"])
        if cif_dir is not None:
            write_cifs(cif_dir, rankings, funnel.relaxed_structure)
    if report is not None:
        from respmatch.reporting import report as write_report

        write_report(out, report)
    return summary


def stage_settings(settings: PredictSettings) -> dict[str, dict]:
    """What each stage's records depend on besides the stages before it: ``RunStore`` begins the
    stages with them, and refuses a resume under others.  The search's are the run parameters."""
    return {
        "distinct": {"matcher": MATCHER_TOLERANCES, "energy_window": ENERGY_WINDOW},
        "shortlist": {"keep": settings.keep, "score": settings.score},
        "screen": {"potential": settings.potential, "fmax": settings.fmax, "screen_steps": settings.screen_steps},
        "relax": {"potential": settings.potential, "fmax": settings.fmax, "max_steps": settings.max_steps,
                  "relax": settings.relax},
        "final": {"matcher": MATCHER_TOLERANCES, "symprec": grouping.SYMPREC},
        TIME: {},
    }


class Funnel:
    """The stages over all formulas of one run, each reading its stored records before computing;
    written through the run's writer (``RunStore``), read back through its ``Stages``."""

    def __init__(self, runs: RunStore, specs: dict, settings: PredictSettings, client, progress):
        self.runs, self.stages, self.specs, self.settings = runs, runs.stages, specs, settings
        self.client, self.progress = client, progress
        self.formulas = list(specs)

    def timed(self, stage: str):
        return records.timed(self.runs, stage)

    def finish(self, stage: str) -> None:
        if not self.stages.finished(stage):
            self.runs.finish_stage(stage)

    def search(self, model, batch_size: int, device: str) -> None:
        """M tries per formula, stored row by row; try i of formula k is run index k·M + i."""
        done, m = self.runs.done_indices(), self.settings.tries
        items = [(k * m + i, spec, i) for k, spec in enumerate(self.specs.values()) for i in range(m) if k * m + i not in done]
        if not items:
            return
        with self.timed("search"), tqdm(total=len(items), desc="search", unit="try", disable=not self.progress) as bar:
            for group in relaxed(model, items, batch_size=batch_size, device=device, dtype=torch.float32,
                                 client=self.client):
                rows = []
                for key, atoms, record in group:
                    formula = self.formulas[key // m]
                    rows.append((atoms, replace(record, index=key), {"composition": formula, "try": record.index}))
                self.runs.write_many(rows)
                bar.update(len(rows))

    def tries(self) -> dict[str, dict[int, Atoms]]:
        by_formula = defaultdict(dict)
        for atoms, pairs in self.runs.rows():
            atoms.info.update(pairs)
            by_formula[pairs["composition"]][int(pairs["index"])] = atoms
        return by_formula

    def per_formula(self, stage: str, kind: type[T], compute: Callable[[str], T]) -> dict[str, T]:
        """``compute(formula)`` for each formula without a stored record of ``stage``; all records."""
        stored = self.stages.records(stage, kind)
        missing = [f for f in self.formulas if f not in stored]
        if missing:
            with self.timed(stage):
                for formula in missing:
                    stored[formula] = compute(formula)
                    self.runs.write_stage(stage, {formula: stored[formula]})
        self.finish(stage)
        return stored

    def relax(self, stage: str, wanted: dict[str, Atoms], settings: RelaxSettings) -> dict[str, Relaxation]:
        """Relax the candidates (key → start) that have no stored record of ``stage``; all records."""
        stored = self.stages.records(stage, Relaxation)
        todo = [(key, atoms) for key, atoms in wanted.items() if key not in stored]
        if todo:
            with self.timed(stage), tqdm(total=len(todo), desc=stage, unit="structure",
                                         disable=not self.progress) as bar:
                for results in relax_candidates(todo, settings, self.client):
                    self.runs.write_stage(stage, dict(results))
                    stored.update(results)
                    bar.update(len(results))
        self.finish(stage)
        return {key: stored[key] for key in wanted}

    def physics(self, full: RelaxSettings) -> dict[str, list[dict]]:
        tries = self.tries()
        self.distinct = self.per_formula(
            "distinct", Distinct, lambda f: Distinct(grouping.distinct_tries(list(tries[f].values()))))
        self.short = self.per_formula(
            "shortlist", Shortlist,
            lambda f: Shortlist(shortlist(self.distinct[f].groups, self.settings.keep, self.settings.score)))

        starts = {candidate(f, g): tries[f][self.distinct[f].groups[g]["members"][0]]
                  for f in self.formulas for g in self.short[f].groups}
        screened = self.relax("screen", starts, replace(full, max_steps=self.settings.screen_steps))

        def screen_energy(key):
            energy = screened[key].energy_per_atom
            return (energy is None, energy or 0.0)

        chosen = {f: sorted((candidate(f, g) for g in self.short[f].groups), key=screen_energy)[: self.settings.relax]
                  for f in self.formulas}
        self.relaxed = self.relax("relax", {k: screened[k].atoms() for ks in chosen.values() for k in ks}, full)

        def rank(formula):
            candidates = []
            for key in chosen[formula]:
                group = self.distinct[formula].groups[group_of(key)]
                result = replace(self.relaxed[key], steps=self.relaxed[key].steps + screened[key].steps)
                candidates.append({"group": group_of(key), "count": group["count"], "energy": group["energy"],
                                   "result": result})
            return Ranking(grouping.final_ranking(candidates))

        self.rankings = self.per_formula("final", Ranking, rank)
        return {f: self.rankings[f].structures for f in self.formulas}

    def relaxed_structure(self, formula: str, entry: dict) -> Atoms:
        return self.relaxed[candidate(formula, entry["best"])].atoms()
