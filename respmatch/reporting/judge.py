"""The judge's verdicts (``respmatch evaluate --json``) laid onto the structures of a run.

An evaluation lists one record per structure in the order the run stores them.  It belongs to a
run when every record has the index and the pseudo-energy of the run's structure at the same
place; a file judged on another run, or on part of one, is refused rather than shown beside the
wrong structures.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from respmatch.errors import RespmatchError
from respmatch.evaluate import JUDGES, Evaluation
from respmatch.reporting.runs import RunView


def read_evaluation(path: str | Path) -> Evaluation:
    """An ``Evaluation`` from the JSON ``respmatch evaluate --json`` writes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such evaluation file")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RespmatchError(f"{path}: not an evaluation file (not JSON: {error})") from None
    if not isinstance(data, dict) or data.get("kind") not in JUDGES or not isinstance(data.get("records"), list):
        raise RespmatchError(f"{path}: not an evaluation file (respmatch evaluate --json writes one)")
    return Evaluation(data["kind"], data.get("summary", {}), data.get("groups", {}), data["records"])


def mismatch(evaluation: Evaluation, run: RunView) -> str | None:
    """Why ``evaluation`` does not describe ``run``, or None when it does."""
    if len(evaluation.records) != len(run.rows):
        return f"it judges {len(evaluation.records)} structures, the run holds {len(run.rows)}"
    for k, (record, row) in enumerate(zip(evaluation.records, run.rows)):
        if record.get("index", row["index"]) != row["index"]:
            return f"its record {k} is structure {record.get('index')}, the run's is {row['index']}"
        judged, stored = record.get("pseudo_energy_per_atom"), row["energy"]
        if judged is not None and stored is not None and not math.isclose(judged, stored, rel_tol=1e-6, abs_tol=1e-9):
            return f"structure {row['index']} has Ẽ/atom {judged:.6g} there and {stored:.6g} in the run"
    return None


def assign(evaluations: list[tuple[str, Evaluation]], runs: list[RunView]) -> dict[int, Evaluation]:
    """Run position -> its evaluation; every evaluation must belong to exactly one run."""
    assigned = {}
    for name, evaluation in evaluations:
        reasons = {}
        for k, run in enumerate(runs):
            reason = mismatch(evaluation, run)
            if reason is None and k not in assigned:
                assigned[k] = evaluation
                break
            reasons[run.name] = reason or "that run already has an evaluation"
        else:
            why = "; ".join(f"{run}: {reason}" for run, reason in reasons.items())
            raise RespmatchError(f"{name}: the evaluation is of another run ({why})")
    return assigned
