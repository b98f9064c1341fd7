"""A molecule prediction as its run stores it: the stage records, and the funnel read back from
them (counts per formula, time per stage, the ranked isomers) as the table and the report show it.

Stages (``respmatch.run.stages``), each resumable by key:

- ``search`` (key: formula): the valid-only search's counts; its molecules are the run's rows;
- ``relax`` (key: ``FORMULA/TRY``): one GFN2-xTB relaxation;
- ``isomers`` (key: formula): the ranked isomers and their conformers;
- ``time`` (key: a stage): wall and CPU seconds, summed over the passes of a resumed run.

This module reads only; ``predict.molecules`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from respmatch.predict.records import TIME, StageTime
from respmatch.run import Run

STAGES = ("search", "relax", "isomers")
COLUMNS = ("rank", "SMILES", "E above lowest (eV)", "found by", "conformers", "E (eV)")
COUNT_COLUMNS = ("tries", "kicks", "valid", "relaxed", "still valid", "isomers", "conformers")


@dataclass
class SearchCounts:
    tries: int  # fresh starts relaxed to the end
    kicks: int  # kick-relaxations of invalid tries
    valid: int  # strictly valid molecules stored
    dropped: int  # tries given up after their last kick


@dataclass
class Relaxation:
    formula: str
    smiles: str | None  # of the relaxed geometry; None when it is no longer strictly valid
    energy: float | None  # eV, the potential's total energy; None when it failed
    steps: int
    converged: bool
    numbers: list[int]
    positions: list[list[float]] | None  # Å, relaxed
    error: str | None


@dataclass
class Ranking:
    relaxed: int  # relaxations it was built from: a run resumed with a larger N ranks again
    isomers: list[dict]  # predict.isomers.rank_isomers


def funnel_counts(counts: dict[str, SearchCounts], relaxed: dict[str, Relaxation],
                  rankings: dict[str, Ranking], formulas: list[str]) -> dict[str, dict]:
    """Per formula: what each stage kept."""
    out = {}
    for formula in formulas:
        searched = counts.get(formula, SearchCounts(0, 0, 0, 0))
        mine = [r for r in relaxed.values() if r.formula == formula and r.error is None]
        isomers = rankings[formula].isomers if formula in rankings else []
        out[formula] = {
            "tries": searched.tries,
            "kicks": searched.kicks,
            "valid": searched.valid,
            "relaxed": len(mine),
            "still valid": sum(r.smiles is not None for r in mine),
            "isomers": len(isomers),
            "conformers": sum(len(i["conformers"]) for i in isomers),
        }
    return out


def read_funnel(run: Run) -> dict:
    """Counts, time per stage, rankings and settings of the molecule prediction ``run``."""
    formulas = list(run.parameters["formulas"])
    rankings = run.stages.records("isomers", Ranking)
    spent = run.stages.records(TIME, StageTime)
    return {
        "kind": "molecule",
        "counts": funnel_counts(run.stages.records("search", SearchCounts), run.stages.records("relax", Relaxation),
                                rankings, formulas),
        "time": {stage: {"wall_s": spent[stage].wall_s, "cpu_s": spent[stage].cpu_s} for stage in STAGES if stage in spent},
        "rankings": {f: rankings[f].isomers for f in formulas if f in rankings},
        "settings": {"n": run.parameters["n"], **run.parameters["settings"]},
    }


def ranking_rows(isomers: list[dict]) -> list[tuple]:
    return [(rank, i["smiles"], f"{i['above_lowest']:.4f}", i["found"], len(i["conformers"]), f"{i['energy']:.4f}")
            for rank, i in enumerate(isomers, 1)]


def ranking_table(funnel: dict) -> str:
    """Per formula: the funnel in one line, then the ranked isomers."""
    lines = []
    for formula, c in funnel["counts"].items():
        isomers = funnel["rankings"].get(formula, [])
        rows = ranking_rows(isomers)
        width = max([len(COLUMNS[1])] + [len(row[1]) for row in rows])
        lines += [
            f"{formula}: {c['tries']} tries ({c['kicks']} kicks), {c['valid']} valid, {c['relaxed']} relaxed "
            f"({c['still valid']} still valid) -> {c['isomers']} isomers, {c['conformers']} conformers",
            f"{COLUMNS[0]}  {COLUMNS[1]:<{width}}  " + "  ".join(COLUMNS[2:]),
        ]
        for rank, smiles, above, found, conformers, energy in rows:
            lines.append(f"{rank:>4}  {smiles:<{width}}  {above:>19}  {found:>8}  {conformers:>10}  {energy:>11}")
        if not isomers:
            lines.append("  (no valid molecule)")
        lines.append("")
    return "\n".join(lines).rstrip()


def report_tables(funnel: dict) -> dict:
    """The report's per-formula counts and rankings (``reporting.funnel.section`` adds the rest)."""
    return {
        "count_columns": COUNT_COLUMNS,
        "counts": [(f, [c[k] for k in COUNT_COLUMNS]) for f, c in funnel["counts"].items()],
        "columns": COLUMNS,
        "rankings": [(formula, ranking_rows(isomers)) for formula, isomers in funnel["rankings"].items()],
    }
