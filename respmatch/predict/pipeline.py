"""``respmatch.predict``: search → distinct → shortlist → screen → relax → final, each stage stored.

Every stage writes its results into the run database as they are known (the tries one row each,
the rest through ``predict.store``) and first reads back what is there, so a run killed anywhere
and started again with ``resume=True`` repeats no stored work: only tries, groups, relaxations
and rankings that are missing are computed.  All formulas go through each stage together, so
the RM search and the potential keep their batches full.

Time per stage is kept in the run too (wall and this process's CPU seconds; work done on Dask
workers shows in wall time only).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from ase import Atoms
from ase.data import chemical_symbols
from tqdm.auto import tqdm

from respmatch.builtin import model_path
from respmatch.cluster import dask_client
from respmatch.errors import RespmatchError
from respmatch.files import check_output, check_output_folder
from respmatch.model import as_model
from respmatch.model.checkpoint import torch_device
from respmatch.predict import groups as grouping
from respmatch.predict.funnel import STAGES, funnel_counts
from respmatch.predict.molecule_settings import check_kind, model_kind
from respmatch.predict.molecules import predict_molecules
from respmatch.predict.output import ranking_table, write_cifs
from respmatch.predict.physics import RelaxSettings, atoms_of, relax_candidates
from respmatch.predict.settings import PredictSettings
from respmatch.predict.shortlist import shortlist
from respmatch.predict.store import StageStore
from respmatch.recheck.potentials import covered_elements, package_version
from respmatch.search.generate import check_batch_size, relaxed
from respmatch.search.spec import SearchSpec
from respmatch.run import RunStore


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
    covered = covered_elements(settings.potential)
    for formula, spec in specs.items():
        missing = sorted(set(spec.numbers) - covered)
        if missing:
            raise RespmatchError(f"{formula}: potential {settings.potential} does not cover element(s) "
                                 f"{', '.join(chemical_symbols[z] for z in missing)}")
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
    with RunStore(out, parameters, resume=resume) as runs, dask_client(workers, scheduler) as own_client:
        stages = StageStore(out)
        try:
            funnel = Funnel(runs, stages, specs, settings, client or own_client, progress)
            funnel.search(rm_model, batch_size, device)
            rankings = funnel.physics(RelaxSettings(settings.potential, settings.fmax, settings.max_steps,
                                                    physics_batch_size, device))
            summary = {"out": str(out), "rankings": rankings, "funnel": funnel_counts(stages, formulas, settings.tries),
                       "time": {s: stages.get("time", s) for s in STAGES}}
            summary["table"] = ranking_table(rankings, summary["funnel"])
            if cif_dir is not None:
                write_cifs(cif_dir, rankings, funnel.relaxed_structure)
        finally:
            stages.close()
    if report is not None:
        from respmatch.reporting import report as write_report

        write_report(out, report)
    return summary


@contextmanager
def timed(stages: StageStore, stage: str):
    """Add the block's seconds to the stage's stored time, also when it is interrupted (a resumed
    run's cost is the sum of its passes)."""
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        stages.add_time(stage, time.perf_counter() - wall, time.process_time() - cpu)


class Funnel:
    """The stages over all formulas of one run, each reading what is stored before computing."""

    def __init__(self, runs: RunStore, stages: StageStore, specs: dict, settings: PredictSettings, client, progress):
        self.runs, self.stages, self.specs, self.settings = runs, stages, specs, settings
        self.client, self.progress = client, progress
        self.formulas = list(specs)

    def search(self, model, batch_size: int, device: str) -> None:
        """M tries per formula, stored row by row; try i of formula k is run index k·M + i."""
        done, m = self.runs.done_indices(), self.settings.tries
        items = [(k * m + i, spec, i) for k, spec in enumerate(self.specs.values()) for i in range(m) if k * m + i not in done]
        if not items:
            return
        with timed(self.stages, "search"), tqdm(total=len(items), desc="search", unit="try", disable=not self.progress) as bar:
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

    def per_formula(self, stage: str, compute) -> dict:
        """``compute(formula)`` for each formula without a stored result of ``stage``; all results."""
        stored = self.stages.stage(stage)
        missing = [f for f in self.specs if f not in stored]
        if missing:
            with timed(self.stages, stage):
                for formula in missing:
                    stored[formula] = compute(formula)
                    self.stages.put_many(stage, {formula: stored[formula]})
        return stored

    def relax(self, stage: str, wanted: dict[str, Atoms], settings: RelaxSettings) -> dict:
        """Relax the candidates (key → start) that have no stored result of ``stage``; all results."""
        stored = self.stages.stage(stage)
        todo = [(key, atoms) for key, atoms in wanted.items() if key not in stored]
        if todo:
            with timed(self.stages, stage), tqdm(total=len(todo), desc=stage, unit="structure",
                                                 disable=not self.progress) as bar:
                for results in relax_candidates(todo, settings, self.client):
                    self.stages.put_many(stage, {r["key"]: r for r in results})
                    stored.update({r["key"]: r for r in results})
                    bar.update(len(results))
        return {key: stored[key] for key in wanted}

    def physics(self, full: RelaxSettings) -> dict[str, list[dict]]:
        tries = self.tries()
        self.distinct = self.per_formula("distinct", lambda f: grouping.distinct_tries(list(tries[f].values())))
        self.short = self.per_formula(
            "shortlist", lambda f: shortlist(self.distinct[f], self.settings.keep, self.settings.score))

        def key(formula, group):
            return f"{formula}#{group}"

        starts = {key(f, g): tries[f][self.distinct[f][g]["members"][0]] for f in self.specs for g in self.short[f]}
        screened = self.relax("screen", starts, replace(full, max_steps=self.settings.screen_steps))

        def screen_energy(k):
            energy = screened[k]["energy_per_atom"]
            return (energy is None, energy or 0.0)

        chosen = {f: sorted((key(f, g) for g in self.short[f]), key=screen_energy)[: self.settings.relax]
                  for f in self.specs}
        self.relaxed = self.relax("relax", {k: atoms_of(screened[k]) for ks in chosen.values() for k in ks}, full)

        def rank(formula):
            candidates = []
            for k in chosen[formula]:
                group = int(k.rpartition("#")[2])
                result = {**self.relaxed[k], "steps": self.relaxed[k]["steps"] + screened[k]["steps"]}
                candidates.append({"group": group, "count": self.distinct[formula][group]["count"],
                                   "energy": self.distinct[formula][group]["energy"], "result": result})
            return grouping.final_ranking(candidates)

        self.rankings = self.per_formula("final", rank)
        return {f: self.rankings[f] for f in self.specs}

    def relaxed_structure(self, formula: str, entry: dict) -> Atoms:
        return atoms_of(self.relaxed[f"{formula}#{entry['best']}"])
