"""PNG plots of an evaluation (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on headless machines and in CI
import matplotlib.pyplot as plt  # noqa: E402

from respmatch.evaluate.result import Evaluation  # noqa: E402
from respmatch.files import atomic_path, check_output  # noqa: E402

ALLOTROPE_MARKERS = {"diamond": "o", "lonsdaleite": "s", "graphite-AB": "^", "graphite-AA": "v"}
COORDINATION_COLOURS = {"sp3": "tab:blue", "sp2": "tab:red", "mixed": "tab:purple", "other": "tab:gray"}


def plot_carbon_map(evaluation: Evaluation, path: str | Path) -> Path:
    """Ẽ/atom against volume/atom, coloured by coordination: the paper's map of carbon minima."""
    figure, axes = plt.subplots(figsize=(6, 4.5), dpi=120)
    for label, colour in COORDINATION_COLOURS.items():
        points = [
            r
            for r in evaluation.records
            if r["coordination"] == label and r.get("pseudo_energy_per_atom") is not None
        ]
        if points:
            axes.scatter(
                [r["volume_per_atom"] for r in points],
                [r["pseudo_energy_per_atom"] for r in points],
                s=14,
                c=colour,
                alpha=0.75,
                label=f"{label} ({len(points)})",
            )
    for name, marker in ALLOTROPE_MARKERS.items():  # known allotropes ringed, not labelled
        points = [r for r in evaluation.records if r.get("allotrope") == name and r.get("pseudo_energy_per_atom") is not None]
        if points:
            axes.scatter(
                [r["volume_per_atom"] for r in points],
                [r["pseudo_energy_per_atom"] for r in points],
                s=60, marker=marker, facecolors="none", edgecolors="black", linewidths=0.7,
                label=f"{name} ({len(points)})",
            )
    axes.set_xlabel("volume per atom (Å³)")
    axes.set_ylabel("pseudo-energy Ẽ per atom (eV)")
    axes.legend(title="coordination / allotrope", fontsize=8)
    axes.set_title("Generated carbon: Ẽ against volume")
    return _save(figure, path)


def plot_group_bars(evaluation: Evaluation, metrics: list[str], path: str | Path, ylabel: str) -> Path:
    """One group of bars per composition (e.g. validity or match rate), values in [0, 1]."""
    names = list(evaluation.groups)
    figure, axes = plt.subplots(figsize=(max(6, 0.35 * len(names) + 2), 4), dpi=120)
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        values = [evaluation.groups[name].get(metric, float("nan")) for name in names]
        axes.bar([x + k * width for x in range(len(names))], values, width=width, label=metric)
    axes.set_xticks([x + 0.4 - width / 2 for x in range(len(names))], names, rotation=70, fontsize=7)
    axes.set_ylim(0, 1.05)
    axes.set_ylabel(ylabel)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    path = check_output(path, option="plot", kind="figure")
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    finally:
        plt.close(figure)
    return path
