"""A predict run's funnel as the report shows it: how many tries, groups, shortlisted and relaxed
per formula, where the time went, and each formula's final ranking (crystals); tries, valid
molecules, isomers and conformers and the ranked isomers (molecules, ``predict.molecule_funnel``)."""

from __future__ import annotations

from respmatch.predict.molecule_funnel import report_tables as molecule_tables
from respmatch.predict.output import COLUMNS
from respmatch.reporting.runs import RunView

COUNT_COLUMNS = ("tries", "converged", "groups", "shortlisted", "relaxed", "final")


def crystal_tables(funnel: dict) -> dict:
    return {
        "count_columns": COUNT_COLUMNS,
        "counts": [(f, [c[k] for k in COUNT_COLUMNS]) for f, c in funnel["counts"].items()],
        "columns": COLUMNS,
        "rankings": [
            (formula, [
                (rank, f"{e['energy_per_atom']:.4f}", f"{e['above_lowest']:.4f}", e["space_group"], e["found"],
                 f"{e['pseudo_energy_per_atom']:.4f}", e["relaxed_into"])
                for rank, e in enumerate(ranking, 1)
            ])
            for formula, ranking in funnel["rankings"].items()
        ],
    }


def section(run: RunView) -> dict | None:
    """Tables of the run's funnel, ready to print; None for a run that is not a prediction."""
    funnel = run.funnel
    if funnel is None:
        return None
    total = sum(t["wall_s"] for t in funnel["time"].values()) or 1.0
    tables = molecule_tables(funnel) if funnel.get("kind") == "molecule" else crystal_tables(funnel)
    return {
        "run": run.name,
        "settings": [(k, str(v)) for k, v in funnel["settings"].items()],
        "time": [(stage, f"{t['wall_s']:.1f}", f"{t['cpu_s']:.1f}", f"{t['wall_s'] / total:.0%}")
                 for stage, t in funnel["time"].items()],
        **tables,
    }
