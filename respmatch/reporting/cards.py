"""The run card and the model card: what was searched, how, and with which model.

Both are lists of (label, value) pairs ready to print; the model card comes from the checkpoint
the run names (``respmatch.run.Checkpoint``: found beside the database when the stored path is
relative), checked against the checksum the run stored.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ase.data import chemical_symbols

from respmatch.model import load_checkpoint, load_model, model_checksum
from respmatch.reporting.runs import RunView
from respmatch.search.spec import SEARCH_PRESETS, search_preset


def search_overrides(parameters: dict) -> dict:
    """Settings of the run's search that differ from its preset (``STAGE.FIELD`` for stages)."""
    preset, stored = parameters.get("preset"), parameters.get("search")
    if preset not in SEARCH_PRESETS or not isinstance(stored, dict):
        return {}
    # As JSON both, since a database gives tuples back as lists.
    default, stored = (json.loads(json.dumps(s)) for s in (asdict(search_preset(preset)), stored))
    changed = {k: v for k, v in stored.items() if k != "stages" and v != default.get(k)}
    for base, stage in zip(default["stages"], stored.get("stages", [])):
        changed.update({f"{base['name']}.{k}": v for k, v in stage.items() if v != base.get(k)})
    return changed


def run_card(run: RunView) -> list[tuple[str, str]]:
    p, rows = run.parameters, run.rows
    compositions = sorted({r["composition"] for r in rows}, key=lambda c: (len(c), c))
    converged = [r["converged"] for r in rows if r["converged"] is not None]
    steps = [r["steps"] for r in rows if r["steps"] is not None]
    overrides = search_overrides(p)
    card = [
        ("source", run.name),
        ("composition" if len(compositions) == 1 else "compositions", ", ".join(compositions)),
        ("preset", str(p.get("preset", "-"))),
        ("overrides", ", ".join(f"{k}={v}" for k, v in overrides.items()) or "none"),
        ("seed", str(p.get("seed", "-"))),
        ("structures", f"{len(rows)} stored" + (f" of {p['n']} asked" if "n" in p else "")),
        ("converged", f"{sum(converged) / len(converged):.1%}" if converged else "-"),
        ("relaxation steps", f"mean {sum(steps) / len(steps):.0f}, max {max(steps)}" if steps else "-"),
        ("time", f"{run.seconds:.1f} s" if run.seconds is not None else "-"),
    ]
    if p.get("volume_per_atom") is not None:
        card.append(("volume per atom", f"{p['volume_per_atom']} Å³"))
    card += [(key, str(p[key])) for key in ("dtype", "device", "batch_size") if key in p]
    if not p:  # e.g. a re-check of a structure file: only what the structures themselves hold
        card = [(label, value) for label, value in card if value not in ("-", "none")]
        card.append(("run parameters", "none recorded"))
    return card


def model_card(path: Path | None, expected_sha256: str | None) -> tuple[list[tuple[str, str]], list[dict]]:
    """(card, training history) of a checkpoint; a card that says why when it cannot be read."""
    if path is None:
        return [("model", "not recorded by the run")], []
    if not path.is_file():
        return [("model", f"{path} (file not found: no model card)")], []
    checkpoint = load_checkpoint(path)
    training = checkpoint.get("training", {})
    best = training.get("best", {})
    history = training.get("history", [])
    card = [("model", str(path))]
    if expected_sha256 and model_checksum(load_model(path)) != expected_sha256:
        card.append(("warning", "this file differs from the model the run used (checksum)"))
    card += [
        ("elements", ", ".join(chemical_symbols[z] for z in checkpoint["elements"])),
        ("training preset", str(training.get("preset", "-"))),
        ("training data", f"{training.get('n_structures', '-')} structures "
                          f"({training.get('n_train', '-')} train, {training.get('n_val', '-')} validation)"),
        ("cutoff", f"{checkpoint['model_config'].get('cutoff', '-')} Å"),
        ("parameters", str(sum(v.numel() for v in checkpoint["state_dict"].values()))),
        ("epochs", f"{len(history)} run, best {best.get('epoch', '-')}"),
    ]
    units = {"forces": "eV/Å", "stress": "eV/Å³", "energy": "eV/atom"}
    for name, unit in units.items():
        value = best.get(f"val_{name}_rmse")
        if value is not None:
            card.append((f"validation {name} RMSE", f"{value:.4g} {unit}"))
    return card, history
