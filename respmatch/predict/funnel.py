"""The funnel of a predict run as its stage records tell it: counts per formula, time per stage
and the final rankings.  What the pipeline prints and the report shows, read one way (through the
run's ``Stages``, read-only)."""

from __future__ import annotations

from dataclasses import asdict

from respmatch.predict.records import STAGES, TIME, Distinct, Ranking, Relaxation, Shortlist, StageTime, formula_of
from respmatch.run import Stages

SETTINGS = ("tries", "keep", "relax", "score", "potential", "screen_steps", "fmax", "max_steps")


def funnel_counts(stages: Stages, formulas: list[str], tries: int) -> dict[str, dict]:
    """Per formula: tries, converged tries, distinct groups, shortlisted, relaxed, final distinct."""
    distinct, short = stages.records("distinct", Distinct), stages.records("shortlist", Shortlist)
    final, relaxed = stages.records("final", Ranking), stages.records("relax", Relaxation)
    counts = {}
    for formula in formulas:
        groups = distinct[formula].groups if formula in distinct else []
        counts[formula] = {
            "tries": tries,
            "converged": sum(g["count"] for g in groups),
            "groups": len(groups),
            "shortlisted": len(short[formula].groups) if formula in short else 0,
            "relaxed": sum(formula_of(key) == formula for key in relaxed),
            "final": len(final[formula].structures) if formula in final else 0,
        }
    return counts


def stage_times(stages: Stages) -> dict[str, dict]:
    """Wall and CPU seconds of each stage that ran, in the funnel's order."""
    spent = stages.records(TIME, StageTime)
    return {stage: asdict(spent[stage]) for stage in STAGES if stage in spent}


def read_funnel(stages: Stages, parameters: dict) -> dict:
    """Counts, time per stage, rankings and settings of a predict run (its parameters and stages)."""
    formulas = list(parameters.get("formulas", []))
    return {
        "counts": funnel_counts(stages, formulas, int(parameters.get("tries", 0))),
        "time": stage_times(stages),
        "rankings": {f: r.structures for f, r in stages.records("final", Ranking).items() if f in formulas},
        "settings": {k: parameters.get(k) for k in SETTINGS},
    }
