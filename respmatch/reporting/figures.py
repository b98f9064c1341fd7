"""The report's interactive plots, built with plotly and handed to the page as figure JSON.

Points carry their table row in ``customdata`` so that a click on a point selects the structure.
Large runs switch to WebGL scatter traces, and the Ẽ distributions are drawn from quartiles
computed here, so the page holds no per-point copy of the energies beyond the map's.
"""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio

WEBGL_ABOVE = 5000  # points; SVG scatter slows down past a few thousand
TEMPLATE = "plotly_white"
ENERGY = "Ẽ per atom (eV)"


def as_json(figure: go.Figure) -> dict:
    """Plain JSON of a figure (numpy arrays as plotly's base64 typed arrays)."""
    figure.update_layout(template=TEMPLATE, margin={"l": 60, "r": 20, "t": 60, "b": 50}, title_font_size=14)
    return json.loads(pio.to_json(figure, validate=False))


def _scatter(points: int):
    return go.Scattergl if points > WEBGL_ABOVE else go.Scatter


def energy_map(rows: list[dict], classes: list[str], title: str) -> dict:
    """Ẽ/atom against volume/atom, one trace per class (the paper's carbon map); periodic only."""
    positions = [k for k, r in enumerate(rows) if r["periodic"] and r["energy"] is not None]
    trace = _scatter(len(positions))
    figure = go.Figure()
    for name in dict.fromkeys(classes[k] for k in positions):
        chosen = np.array([k for k in positions if classes[k] == name], dtype=np.int32)
        figure.add_trace(
            trace(
                x=np.array([rows[k]["volume"] for k in chosen], dtype=np.float32),
                y=np.array([rows[k]["energy"] for k in chosen], dtype=np.float32),
                customdata=chosen,
                mode="markers",
                marker={"size": 6, "opacity": 0.75},
                name=f"{name} ({len(chosen)})",
                hovertemplate="V/atom %{x:.3f} Å³<br>Ẽ/atom %{y:.4f} eV<extra>%{fullData.name}</extra>",
            )
        )
    figure.update_layout(title=title, xaxis_title="volume per atom (Å³)", yaxis_title=ENERGY, legend_title="judge's class")
    return as_json(figure)


def rate_bars(rates: dict[str, dict[str, float]], title: str) -> dict:
    """One group of bars per composition: shares in [0, 1]."""
    figure = go.Figure()
    for metric, values in rates.items():
        names = list(values)
        figure.add_trace(go.Bar(x=names, y=[values[n] for n in names], name=metric.replace("_", " ")))
    figure.update_layout(title=title, barmode="group", yaxis={"range": [0, 1.05], "title": "share of tries"}, xaxis_title="composition")
    return as_json(figure)


def energy_boxes(rows: list[dict]) -> dict:
    """Ẽ/atom per composition as box plots from quartiles (min and max as the whiskers)."""
    energies: dict[str, list[float]] = {}
    for row in rows:
        if row["energy"] is not None:
            energies.setdefault(row["composition"], []).append(row["energy"])
    names = sorted(energies, key=lambda c: (len(c), c))
    stats = [np.percentile(energies[n], [0, 25, 50, 75, 100]) for n in names]
    figure = go.Figure(
        go.Box(
            x=names,
            lowerfence=[s[0] for s in stats],
            q1=[s[1] for s in stats],
            median=[s[2] for s in stats],
            q3=[s[3] for s in stats],
            upperfence=[s[4] for s in stats],
            mean=[float(np.mean(energies[n])) for n in names],
            name="Ẽ/atom",
            boxmean=True,
        )
    )
    figure.update_layout(title="Ẽ per atom by composition (quartiles, range, mean)", yaxis_title=ENERGY, xaxis_title="composition", showlegend=False)
    return as_json(figure)


def training_curve(history: list[dict]) -> dict:
    """Training and validation loss, validation force RMSE, per epoch (log scale)."""
    epochs = [h["epoch"] for h in history]
    figure = go.Figure()
    for key, name in (("train_loss", "training loss"), ("val_loss", "validation loss"), ("val_forces_rmse", "validation force RMSE (eV/Å)")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            figure.add_trace(go.Scatter(x=epochs, y=values, mode="lines", name=name))
    figure.update_layout(xaxis_title="epoch", yaxis_type="log", title="training curve")
    return as_json(figure)


def recheck_scatter(rows: list[dict], physical: list[float | None]) -> dict:
    """Ẽ/atom against physical energy/atom, one trace per composition."""
    positions = [k for k, r in enumerate(rows) if r["energy"] is not None and physical[k] is not None]
    trace = _scatter(len(positions))
    figure = go.Figure()
    for name in sorted({rows[k]["composition"] for k in positions}, key=lambda c: (len(c), c)):
        chosen = np.array([k for k in positions if rows[k]["composition"] == name], dtype=np.int32)
        figure.add_trace(
            trace(
                x=np.array([physical[k] for k in chosen], dtype=np.float64),
                y=np.array([rows[k]["energy"] for k in chosen], dtype=np.float32),
                customdata=chosen,
                mode="markers",
                name=name,
            )
        )
    figure.update_layout(title="Ẽ against the physical energy", xaxis_title="physical energy per atom (eV)", yaxis_title=ENERGY, legend_title="composition")
    return as_json(figure)
