"""Assemble the report: page data (cards, tables, figures, structures) rendered by jinja2 into one
HTML file with every script and style inside.

The libraries travel compressed (gzip, base64) and the browser unpacks them with its built-in
``DecompressionStream``: plotly.js alone is 4.8 MB as text, 1.9 MB packed.  plotly.js comes from
the installed plotly package; 3Dmol.js is vendored in ``vendor/`` (npm ``3dmol``, BSD-3-Clause).
"""

from __future__ import annotations

import base64
import datetime
import gzip
import io
import math
from importlib import resources
from pathlib import Path

import jinja2
import numpy as np
from ase.io import write as ase_write
from plotly.offline import get_plotlyjs

from respmatch.evaluate import JUDGES, Evaluation
from respmatch.evaluate.result import format_value
from respmatch.reporting import cards, figures, funnel, recheck
from respmatch.reporting.runs import RunView

_PACKAGE = resources.files("respmatch.reporting")
PAGE_SIZE = 500  # table rows drawn at once; the rest are a page turn away


def packed(text: str) -> str:
    """gzip + base64 of a script, for the page's unpacker."""
    return base64.b64encode(gzip.compress(text.encode(), compresslevel=9, mtime=0)).decode()


def structure_file(atoms, name: str) -> dict:
    """The structure as ASE writes it: CIF for crystals, XYZ for molecules (viewer and download)."""
    periodic = bool(atoms.pbc.all())
    buffer = io.BytesIO() if periodic else io.StringIO()
    ase_write(buffer, atoms, format="cif" if periodic else "xyz")
    text = buffer.getvalue()
    extension = "cif" if periodic else "xyz"
    return {"name": f"{name}.{extension}", "format": extension, "text": text.decode() if periodic else text}


def lowest_per_composition(rows: list[dict], k: int) -> list[int]:
    """Positions of the ``k`` lowest-Ẽ structures of every composition (no Ẽ ranks last)."""
    by_composition: dict[str, list[int]] = {}
    for position, row in enumerate(rows):
        by_composition.setdefault(row["composition"], []).append(position)
    chosen = []
    for positions in by_composition.values():
        positions.sort(key=lambda p: (rows[p]["energy"] is None, rows[p]["energy"] or 0.0))
        chosen += positions[:k]
    return sorted(chosen)


def _finite(value):
    return value if not (isinstance(value, float) and not math.isfinite(value)) else None


def _composition_order(rows: list[dict]) -> list[str]:
    return sorted({r["composition"] for r in rows}, key=lambda c: (len(c), c))


def page_data(runs: list[RunView], evaluations: dict[int, Evaluation], structures: int) -> dict:
    """Everything the template and the page's script show."""
    rows, owners, verdicts = [], [], []
    for k, run in enumerate(runs):
        evaluation = evaluations.get(k)
        for position, row in enumerate(run.rows):
            rows.append(row)
            owners.append((k, position))
            if evaluation is not None:
                verdicts.append(JUDGES[evaluation.kind].verdict(evaluation.records[position]))
            else:
                state = {True: "converged", False: "not converged", None: "not judged"}[row["converged"]]
                verdicts.append({"class": state, "verdict": "", "label": "", "match": ""})

    chosen = lowest_per_composition(rows, structures)
    files, file_of = [], {}
    for k, run in enumerate(runs):
        mine = [p for p in chosen if owners[p][0] == k]
        for p, atoms in zip(mine, run.read([owners[p][1] for p in mine])):
            file_of[p] = len(files)
            stem = Path(run.name).stem
            files.append(structure_file(atoms, f"{rows[p]['composition']}-{stem}-{rows[p]['index']}"))

    physical = [recheck.physical_energy(r) for r in rows]
    compositions = _composition_order(rows)
    code = {c: n for n, c in enumerate(compositions)}
    classes = [v["class"] for v in verdicts]
    table = {
        "runs": [run.name for run in runs],
        "compositions": compositions,
        "run": [o[0] for o in owners],
        "index": [r["index"] for r in rows],
        "composition": [code[r["composition"]] for r in rows],
        "natoms": [r["natoms"] for r in rows],
        "energy": [None if r["energy"] is None else round(r["energy"], 6) for r in rows],
        "volume": [None if r["volume"] is None else round(r["volume"], 4) for r in rows],
        "converged": [r["converged"] for r in rows],
        "steps": [r["steps"] for r in rows],
        "verdict": [v["verdict"] or v["class"] for v in verdicts],
        "label": [v["label"] for v in verdicts],
        "match": [v["match"] for v in verdicts],
        "physical": [None if p is None else round(p, 6) for p in physical],
        "file": [file_of.get(p, -1) for p in range(len(rows))],
    }

    kinds = sorted({e.kind for e in evaluations.values()})
    plots = {}
    if any(r["energy"] is not None for r in rows):  # a re-check of a plain structure file has no Ẽ
        plots["energies"] = figures.energy_boxes(rows)
    if any(r["periodic"] for r in rows):
        judged = "judge's class" if evaluations else "convergence (no judge's verdicts)"
        plots["map"] = figures.energy_map(rows, classes, f"Ẽ against volume, coloured by {judged}")
    shares = {}
    for k, evaluation in evaluations.items():
        for metric, values in JUDGES[evaluation.kind].rates(evaluation).items():
            shares.setdefault(metric, {}).update(values)
    if not shares:
        converged = {}
        for c in compositions:
            flags = [r["converged"] for r in rows if r["composition"] == c and r["converged"] is not None]
            converged[c] = sum(flags) / len(flags) if flags else None
        shares = {"converged": converged}
    if any(v is not None for values in shares.values() for v in values.values()):
        plots["rates"] = figures.rate_bars(shares, "per composition: " + ", ".join(m.replace("_", " ") for m in shares))

    run_cards, models = [], {}
    for run in runs:
        checkpoint = run.run.checkpoint
        path = checkpoint.locate(run.run.folder)
        key = str(path)
        if key not in models:
            card, history = cards.model_card(path, checkpoint.sha256)
            models[key] = {"card": card, "figure": f"training{len(models)}" if history else None}
            if history:
                plots[f"training{len(models) - 1}"] = figures.training_curve(history)
        run_cards.append(cards.run_card(run))

    physical_summary = recheck.summary(rows)
    if any(r["energy"] is not None and p is not None for r, p in zip(rows, physical)):
        plots["recheck"] = figures.recheck_scatter(rows, physical)

    judged = []
    for k, evaluation in sorted(evaluations.items()):
        columns = list(dict.fromkeys(key for metrics in evaluation.groups.values() for key in metrics))
        judged.append(
            {
                "run": runs[k].name,
                "kind": evaluation.kind,
                "summary": [(key, format_value(value)) for key, value in evaluation.summary.items()],
                "columns": columns,
                "groups": [(name, [format_value(m.get(c, "")) for c in columns]) for name, m in evaluation.groups.items()],
            }
        )
    return {
        "title": "respmatch report: " + ", ".join(run.name for run in runs),
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "counts": {"structures": len(rows), "embedded": len(files), "per_composition": structures},
        "kinds": kinds,
        "run_cards": run_cards,
        "models": list(models.values()),
        "judged": judged,
        "recheck": physical_summary,
        "funnels": [f for f in map(funnel.section, runs) if f is not None],
        "client": {
            "table": table,
            "files": files,
            "figures": plots,
            "pageSize": PAGE_SIZE,
            "periodic": any(r["periodic"] for r in rows),
            "recheck": physical_summary is not None,
        },
    }


def _clean(value):
    """JSON for the browser: NaN and infinities (which JSON.parse refuses) become null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):  # values read from extxyz come as numpy scalars
        value = value.item()
    return _finite(value)


def render(data: dict) -> str:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("respmatch.reporting", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    template = environment.get_template("report.html.j2")
    return template.render(
        **data,
        client_json=jinja2.utils.htmlsafe_json_dumps(_clean(data["client"]), separators=(",", ":")),
        style=(_PACKAGE / "static" / "report.css").read_text(),
        script=(_PACKAGE / "static" / "report.js").read_text(),
        libraries={
            "plotly": packed(get_plotlyjs()),
            "3Dmol": packed((_PACKAGE / "vendor" / "3Dmol-min.js").read_text()),
        },
    )
