"""The judges, one class per kind of structure, in one registry (``JUDGES``).

A judge evaluates structures of its kind (respmatch.evaluate.result.Evaluation), adds the
physical judgement where ``respmatch recheck`` left verdicts, plots its rates, and tells the
report how to show one record (class for the map's colours, verdict, label, match) and which
shares per composition to plot.  A new kind is one more class here.  The evaluators are
imported when a judge first works: pymatgen and RDKit take seconds to import, and a report
without an evaluation needs neither.
"""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.evaluate.result import Evaluation


class Judge:
    kind: str
    plotted: tuple[str, ...]  # metrics per composition that ``plot`` draws

    def evaluate(self, structures: list[Atoms], reference, training, rank_by: str) -> Evaluation:
        raise NotImplementedError

    def add_physical(self, evaluation: Evaluation, structures: list[Atoms], reference, training) -> None:
        """The physical judgement on top, where structures were rechecked (none by default)."""

    def plot(self, evaluation: Evaluation, path: str | Path) -> Path:
        from respmatch.evaluate.plots import plot_group_bars

        return plot_group_bars(evaluation, list(self.plotted), path, self.plot_label)

    plot_label = "share of tries"

    def verdict(self, record: dict) -> dict:
        """The judge's word on one structure, as short strings: class, verdict, label, match."""
        raise NotImplementedError

    def rates(self, evaluation: Evaluation) -> dict[str, dict[str, float]]:
        """Shares per composition that the report plots."""
        return {name: {group: metrics.get(name) for group, metrics in evaluation.groups.items()} for name in self.plotted}


class MoleculeJudge(Judge):
    kind = "molecule"
    plotted = ("strict_valid", "lenient_valid")

    def evaluate(self, structures, reference, training, rank_by):
        from respmatch.evaluate.molecules import evaluate_molecules

        return evaluate_molecules(structures, training=training)

    def add_physical(self, evaluation, structures, reference, training):
        from respmatch.evaluate.physical import judge_molecules

        judge_molecules(evaluation, structures, training)

    def verdict(self, record):
        group = "strictly valid" if record.get("strict") else "leniently valid" if record.get("lenient") else "invalid"
        novel = record.get("novel")
        return {
            "class": group,
            "verdict": group,
            "label": record.get("smiles") or "",
            "match": "" if novel is None else ("novel" if novel else "in training set"),
        }


class CrystalJudge(Judge):
    kind = "crystal"
    plotted = ("matched_any", "matched_lowest")
    plot_label = "matched"

    def evaluate(self, structures, reference, training, rank_by):
        from respmatch.evaluate.crystals import evaluate_crystals

        return evaluate_crystals(structures, reference=reference, training=training, rank_by=rank_by)

    def add_physical(self, evaluation, structures, reference, training):
        from respmatch.evaluate.physical import judge_crystals, reference_energies

        judge_crystals(evaluation, structures, reference, reference_energies(structures, reference))

    def verdict(self, record):
        matched = record.get("matched")
        group = "matched" if matched else "valid" if record.get("valid") else "invalid"
        number = record.get("spacegroup_number")
        rms = record.get("rms")
        return {
            "class": group,
            "verdict": group,
            "label": f"{record['spacegroup']} ({number})" if record.get("spacegroup") else "",
            "match": "" if matched is None else (f"yes (rms {rms:.3f})" if matched else "no"),
        }

    def rates(self, evaluation):
        """Validity and reference match of the tries, per formula."""
        tries: dict[str, list[dict]] = {}
        for record in evaluation.records:
            tries.setdefault(record["formula"], []).append(record)
        shares = {"valid": {f: sum(bool(r["valid"]) for r in rs) / len(rs) for f, rs in tries.items()}}
        judged = {f: rs for f, rs in tries.items() if rs[0].get("matched") is not None}
        if judged:
            shares["matched"] = {f: sum(bool(r["matched"]) for r in rs) / len(rs) for f, rs in judged.items()}
        return shares


class CarbonJudge(Judge):
    kind = "carbon"
    plotted = ("all_sp3", "all_sp2", "mixed")

    def evaluate(self, structures, reference, training, rank_by):
        from respmatch.evaluate.carbon import evaluate_carbon

        return evaluate_carbon(structures, reference=reference)

    def plot(self, evaluation, path):
        from respmatch.evaluate.plots import plot_carbon_map

        return plot_carbon_map(evaluation, path)

    def verdict(self, record):
        coordination = record.get("coordination") or "other"
        return {
            "class": coordination,
            "verdict": record.get("allotrope") or coordination,
            "label": f"{record['spacegroup']}" if record.get("spacegroup") else "",
            "match": record.get("reference_match") or "",
        }


JUDGES: dict[str, Judge] = {judge.kind: judge for judge in (MoleculeJudge(), CrystalJudge(), CarbonJudge())}


def judge_for(kind: str) -> Judge:
    if kind not in JUDGES:
        raise RespmatchError(f"unknown kind {kind!r} (choose from {', '.join(JUDGES)})")
    return JUDGES[kind]
