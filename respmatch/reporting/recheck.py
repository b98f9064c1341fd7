"""The physical re-check (``respmatch recheck``) as the report shows it: Ẽ against physical energy.

Every row carries the structure's ``RecheckRecord`` (None where not rechecked); the energy and
the rank correlation are the judges' own (respmatch.record.physical_energy,
respmatch.evaluate.result.spearman).
"""

from __future__ import annotations

import math

from respmatch.evaluate.result import spearman


def physical_energy(row: dict) -> float | None:
    """The row's physical energy per atom, as the judges read it."""
    return None if row["recheck"] is None else row["recheck"].physical_energy


def _share(rows: list[dict], field: str) -> str | None:
    """Share of rechecked rows whose flag ``field`` is true (e.g. relax_survived)."""
    flags = [getattr(r["recheck"], field) for r in rows if getattr(r["recheck"], field) is not None]
    return f"{sum(flags) / len(flags):.1%} of {len(flags)}" if flags else None


def _rho(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def summary(rows: list[dict]) -> dict | None:
    """Card and per-composition ρ of the rechecked structures; None when nothing was rechecked."""
    checked = [r for r in rows if r["recheck"] is not None]
    if not checked:
        return None
    potentials = sorted({f"{r['recheck'].physical_potential} {r['recheck'].physical_version or ''}".strip() for r in checked})
    measured = [(r["energy"], physical_energy(r), r["composition"]) for r in checked]
    # Pairs with Ẽ: a re-check of a plain structure file has none, and then no ρ to show.
    scored = [(e, p, c) for e, p, c in measured if e is not None and p is not None]
    card = [
        ("potential", ", ".join(potentials)),
        ("structures rechecked", f"{len(checked)} of {len(rows)}"),
        ("with a physical energy", str(sum(p is not None for _, p, _ in measured))),
        ("failed", str(sum(1 for r in checked if r["recheck"].physical_error))),
    ]
    for label, flag in (("relaxation converged", "relax_converged"), ("survived relaxation", "relax_survived")):
        value = _share(checked, flag)
        if value:
            card.append((label, value))
    if scored:
        card.append(("Spearman ρ(Ẽ, E_phys), all", _rho(spearman([(e, p) for e, p, _ in scored]))))
    by_composition = {}
    for composition in sorted({c for _, _, c in scored}, key=lambda c: (len(c), c)):
        pairs = [(e, p) for e, p, c in scored if c == composition]
        by_composition[composition] = {"n": len(pairs), "rho": _rho(spearman(pairs))}
    return {"card": card, "by_composition": by_composition}
