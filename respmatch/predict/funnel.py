"""The funnel of a predict run as its stored stage results tell it: counts per formula, time per
stage and the final rankings.  What the pipeline prints and the report shows, read one way."""

from __future__ import annotations

from respmatch.predict.store import TIME_STAGE, StageStore

STAGES = ("search", "distinct", "shortlist", "screen", "relax", "final")


def funnel_counts(stages: StageStore, formulas: list[str], tries: int) -> dict[str, dict]:
    """Per formula: tries, converged tries, distinct groups, shortlisted, relaxed, final distinct."""
    distinct, short, final = stages.stage("distinct"), stages.stage("shortlist"), stages.stage("final")
    relaxed = stages.stage("relax")
    counts = {}
    for formula in formulas:
        groups = distinct.get(formula, [])
        counts[formula] = {
            "tries": tries,
            "converged": sum(g["count"] for g in groups),
            "groups": len(groups),
            "shortlisted": len(short.get(formula, [])),
            "relaxed": sum(key.rpartition("#")[0] == formula for key in relaxed),
            "final": len(final.get(formula, [])),
        }
    return counts


def read_funnel(path, parameters: dict) -> dict:
    """Counts, time per stage and rankings of the predict run in ``path`` (read only)."""
    stages = StageStore(path, read_only=True)
    try:
        formulas = list(parameters.get("formulas", []))
        spent = stages.stage(TIME_STAGE)
        return {
            "counts": funnel_counts(stages, formulas, int(parameters.get("tries", 0))),
            "time": {stage: spent[stage] for stage in STAGES if stage in spent},
            "rankings": {f: r for f, r in stages.stage("final").items() if f in formulas},
            "settings": {k: parameters.get(k) for k in ("tries", "keep", "relax", "score", "potential",
                                                        "screen_steps", "fmax", "max_steps")},
        }
    finally:
        stages.close()
