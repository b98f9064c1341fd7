"""``respmatch report``: one self-contained HTML file that shows a search to a person.

Run and model cards, the judge's tables, the physical re-check, interactive plots (plotly) and a
sortable table of structures whose lowest-Ẽ members open in a 3D viewer (3Dmol.js) and download
as CIF or XYZ.  Everything the page needs is inside the file: it opens offline and can be sent on.
"""

from __future__ import annotations

from pathlib import Path

from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.evaluate import Evaluation
from respmatch.files import atomic_write_bytes, check_output
from respmatch.reporting.judge import assign, read_evaluation
from respmatch.reporting.page import page_data, render
from respmatch.reporting.runs import RunView, from_structures, read_database, view
from respmatch.run import Run

DEFAULT_STRUCTURES = 50  # structures per composition whose coordinates the page embeds


def report(
    source: str | Path | Run | list[Atoms] | list,
    out: str | Path,
    *,
    evaluation: str | Path | Evaluation | list | None = None,
    recheck: bool = False,
    structures: int = DEFAULT_STRUCTURES,
) -> Path:
    """Write the HTML report of one run or several and return its path.

    ``source``: a run database (or a list of them), a ``Run`` (respmatch.run; or the
    ``RunView`` of ``from_structures``), or a list of ``Atoms`` such as ``search_compositions``
    yields.  ``evaluation``: what ``respmatch evaluate --json`` wrote
    for the run (or an ``Evaluation``; several for several runs).  ``recheck=True`` insists on the
    physical re-check section (an error when no structure was rechecked; without it the
    section appears whenever re-check results are stored).  ``structures``: how many of the
    lowest-Ẽ structures per composition the page holds with coordinates.
    """
    if structures < 0:
        raise RespmatchError(f"--structures must be 0 or more, got {structures}")
    out = Path(out)
    sources = source if isinstance(source, list) and not (source and isinstance(source[0], Atoms)) else [source]
    paths = [Path(s) for s in sources if isinstance(s, (str, Path))]
    given = evaluation if isinstance(evaluation, list) else [] if evaluation is None else [evaluation]
    check_output(out, paths + [Path(e) for e in given if isinstance(e, (str, Path))], kind="report")

    runs = []
    for item in sources:
        if isinstance(item, RunView):
            runs.append(item)
        elif isinstance(item, Run):
            runs.append(view(item))
        elif isinstance(item, list):
            runs.append(from_structures(item))
        else:
            runs.append(read_database(item))
    evaluations = [(str(e), read_evaluation(e)) if isinstance(e, (str, Path)) else (e.kind, e) for e in given]
    assigned = assign(evaluations, runs)
    if recheck and not any(row["recheck"] is not None for run in runs for row in run.rows):
        names = ", ".join(run.name for run in runs)
        raise RespmatchError(f"{names}: no structure has physical re-check results (run respmatch recheck first)")
    atomic_write_bytes(out, render(page_data(runs, assigned, structures)).encode())
    return out


__all__ = ["DEFAULT_STRUCTURES", "Run", "RunView", "from_structures", "read_database", "report"]
