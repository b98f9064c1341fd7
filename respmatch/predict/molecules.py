"""``respmatch predict FORMULA --model qm9``: valid molecules → GFN2-xTB → isomers and conformers, ranked.

Per formula: the valid-only search (``search.valid``: basin hopping on the learned Ẽ with the
molecule judge as the acceptance test) stores N strictly valid molecules as the run's rows; each
is relaxed with the physical potential (GFN2-xTB through tblite, positions only, in vacuum,
neutral and closed-shell: the re-check's molecule relaxation, ASE FIRE) and judged again; the
relaxed, still valid molecules are grouped into isomers by canonical SMILES and, within an
isomer, into conformers (``predict.isomers``), and ranked by energy.

Every stage keeps its results in the run as typed stage records (``predict.molecule_funnel``)
the moment they are known, and first reads back what is there: a run killed anywhere and started
again with ``resume=True`` repeats no stored molecule, relaxation or ranking.  A resumed search
goes on after the last stored molecule of its formula (as ``generate --valid-only`` does), so its
try counts are those of the passes, the tries in flight at a kill not counted.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ase import Atoms
from rdkit.rdBase import BlockLogs
from tqdm.auto import tqdm

from respmatch.builtin import model_path
from respmatch.chem import judge
from respmatch.errors import RespmatchError
from respmatch.files import check_output, check_output_folder
from respmatch.model import as_model
from respmatch.model.checkpoint import torch_device
from respmatch.predict.isomers import rank_isomers
from respmatch.predict import records
from respmatch.predict.molecule_files import write_isomers
from respmatch.predict.molecule_funnel import Ranking, Relaxation, SearchCounts, ranking_table, read_funnel
from respmatch.predict.molecule_settings import MoleculeSettings
from respmatch.recheck.check import RecheckSettings, relax_structures
from respmatch.recheck.potentials import check_elements, package_version
from respmatch.run import RunStore, open_run
from respmatch.search.generate import check_batch_size, record_of
from respmatch.search.relax import BatchRelaxer
from respmatch.search.spec import SearchSpec
from respmatch.search.valid import ValidSearchCounts, valid_molecules

STRIDE = 10**6  # run index of try i of formula k: k·STRIDE + i


def predict_molecules(
    formulas: list[str],
    model,
    out: str | Path,
    *,
    settings: MoleculeSettings | None = None,
    resume: bool = False,
    sdf_dir: str | Path | None = None,
    xyz_dir: str | Path | None = None,
    report: str | Path | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """The isomers of each formula, ranked by the potential's energy (``respmatch.predict`` for a
    molecule model).  Returns ``{"out", "rankings": {formula: [isomer, ...]}, "funnel": {formula:
    counts}, "time": {stage: seconds}, "table"}``; an isomer holds its SMILES, lowest energy (eV),
    energy above the formula's lowest, how many tries relaxed into it (``found``) and its
    conformers (energy, found, best: the run key of its geometry).  ``sdf_dir``/``xyz_dir``: one
    file per ranked isomer, ``DIR/FORMULA/RANK.sdf`` or ``.xyz``, its conformers lowest first."""
    settings = settings or MoleculeSettings()
    check_batch_size(batch_size)
    torch_device(device)
    if settings.tries >= STRIDE:
        raise RespmatchError(f"max_tries must be below {STRIDE}, got {settings.tries}")
    model_name = str(model_path(model)) if isinstance(model, (str, Path)) else None
    check_output(out, inputs=[model_name] if model_name else [])
    for folder, option in ((sdf_dir, "--sdf-dir"), (xyz_dir, "--xyz-dir")):
        if folder is not None:
            check_output_folder(folder, option)
    if report is not None:
        check_output(report, inputs=[out], option="--report")
    rm_model = as_model(model, device)
    specs = {f: SearchSpec.build(rm_model, f, settings.n, "molecule", None, settings.seed,
                                  {"box": list(settings.box)}) for f in formulas}
    version = package_version(settings.potential)
    for formula, spec in specs.items():
        check_formula(formula, spec.numbers, settings.potential)
    search_settings = {k: v for k, v in settings.parameters().items() if k != "n"}
    parameters = {
        "formulas": formulas,
        "predict": "molecules",
        "n": settings.n,  # may grow on resume: the search goes on
        "settings": search_settings,
        "preset": "molecule",
        "search": specs[formulas[0]].parameters()["search"],
        "model": model_name,
        "model_sha256": specs[formulas[0]].model_sha256,
        "batch_size": batch_size,
        "device": device,
    }
    with RunStore(out, parameters, resume=resume) as runs:
        funnel = MoleculeFunnel(runs, specs, settings, progress)
        funnel.search(rm_model, batch_size, device)
        funnel.relax(version)
        rankings = funnel.rank()
        for folder, suffix in ((sdf_dir, "sdf"), (xyz_dir, "xyz")):
            if folder is not None:
                write_isomers(folder, suffix, rankings, funnel.structure)
    shown = read_funnel(open_run(out))
    summary = {"out": str(out), "rankings": shown["rankings"], "funnel": shown["counts"], "time": shown["time"],
               "table": ranking_table(shown)}
    if report is not None:
        from respmatch.reporting import report as write_report

        write_report(out, report)
    return summary


def check_formula(formula: str, numbers: tuple[int, ...], potential: str) -> None:
    """One line before any work for a formula no neutral closed-shell molecule has, or with an
    element the potential does not cover (the model's elements are checked by ``SearchSpec``)."""
    check_elements(potential, formula, numbers)
    if sum(numbers) % 2:
        raise RespmatchError(f"{formula}: {sum(numbers)} electrons, an odd number: no neutral closed-shell "
                             "molecule has this formula (the judge accepts no radical, and the potential "
                             "is run neutral and closed-shell)")


class MoleculeFunnel:
    """The stages over all formulas of one run, each reading what is stored before computing."""

    def __init__(self, runs: RunStore, specs: dict[str, SearchSpec], settings: MoleculeSettings, progress: bool):
        self.runs, self.specs, self.settings, self.progress = runs, specs, settings, progress
        self.relaxations: dict[str, Relaxation] = {}
        runs.begin_stage(records.TIME, {})

    def timed(self, stage: str):
        return records.timed(self.runs, stage)

    def search(self, model, batch_size: int, device: str) -> None:
        """N strictly valid molecules per formula, each stored as a row the moment it is found."""
        self.runs.begin_stage("search", {"max_kicks": self.settings.max_kicks})
        stored = self.runs.stages.records("search", SearchCounts)
        done = self.runs.done_indices()
        for k, (formula, spec) in enumerate(self.specs.items()):
            mine = [i - k * STRIDE for i in done if k * STRIDE <= i < (k + 1) * STRIDE]
            before = stored.get(formula, SearchCounts(0, 0, 0, 0))
            wanted, left = self.settings.n - len(mine), self.settings.tries - before.tries
            if wanted <= 0 or left <= 0:
                continue
            live = ValidSearchCounts()

            def counts():
                return SearchCounts(before.tries + live.tries, before.kicks + live.kicks, len(mine) + live.valid,
                                    before.dropped + live.dropped)

            found = valid_molecules(
                BatchRelaxer(model, batch_size=batch_size, device=device, dtype=torch.float32), spec, wanted,
                max_kicks=self.settings.max_kicks, first_index=max(mine, default=-1) + 1, max_tries=left, counts=live,
            )
            with self.timed("search"), tqdm(total=self.settings.n, initial=len(mine), desc=f"{formula} valid",
                                            unit="molecule", disable=not self.progress) as bar:
                for result, kicks, smiles in found:
                    record = record_of(result, spec, k * STRIDE + result.key)
                    extra = {"composition": formula, "try": result.key, "kicks": kicks, "smiles": smiles}
                    self.runs.write_many([(result.atoms, record, extra)])
                    self.runs.write_stage("search", {formula: counts()})
                    bar.update(1)
                self.runs.write_stage("search", {formula: counts()})
        self.runs.finish_stage("search")

    def relax(self, version: str) -> None:
        """Relax every stored molecule without a stored relaxation, and judge it again."""
        s = self.settings
        self.runs.begin_stage("relax", {"potential": s.potential, "version": version, "fmax": s.fmax,
                                        "max_steps": s.max_steps})
        self.relaxations = self.runs.stages.records("relax", Relaxation)
        todo = []
        for atoms, pairs in self.runs.rows():
            key = f"{pairs['composition']}/{pairs['try']}"
            if key not in self.relaxations:
                todo.append((key, pairs["composition"], atoms))
        settings = RecheckSettings(s.potential, relax=True, fmax=s.fmax, max_steps=s.max_steps)
        _quiet = BlockLogs()
        with self.timed("relax"), tqdm(total=len(todo), desc="relax", unit="molecule", disable=not self.progress) as bar:
            for key, formula, atoms in todo:
                ((result, error),) = relax_structures([atoms], settings)
                if error is not None:
                    record = Relaxation(formula, None, None, 0, False, atoms.numbers.tolist(), None, error)
                else:
                    relaxed, energy, steps, converged = result
                    verdict = judge(relaxed)
                    record = Relaxation(formula, verdict["smiles"] if verdict["strict"] else None, energy, steps,
                                        converged, relaxed.numbers.tolist(), relaxed.positions.round(8).tolist(), None)
                self.runs.write_stage("relax", {key: record})
                self.relaxations[key] = record
                bar.update(1)
        self.runs.finish_stage("relax")

    def rank(self) -> dict[str, list[dict]]:
        """Each formula's isomers, ranked; a stored ranking is kept while it was built from every
        relaxation of its formula."""
        self.runs.begin_stage("isomers", {"rmsd": self.settings.rmsd})
        stored = self.runs.stages.records("isomers", Ranking)
        with self.timed("isomers"):
            for formula in self.specs:
                mine = {k: r for k, r in self.relaxations.items() if r.formula == formula}
                if formula in stored and stored[formula].relaxed == len(mine):
                    continue
                members = [{"key": k, "smiles": r.smiles, "energy": r.energy, "atoms": self.structure(k)}
                           for k, r in mine.items() if r.smiles is not None]
                stored[formula] = Ranking(len(mine), rank_isomers(members, self.settings.rmsd))
                self.runs.write_stage("isomers", {formula: stored[formula]})
        self.runs.finish_stage("isomers")
        return {formula: stored[formula].isomers for formula in self.specs}

    def structure(self, key: str) -> Atoms:
        """The relaxed geometry stored under ``key``."""
        relaxation = self.relaxations[key]
        return Atoms(relaxation.numbers, relaxation.positions)
