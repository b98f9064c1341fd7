"""The physical re-check (``respmatch recheck``) as the report shows it: Ẽ against physical energy.

The re-check writes its results into the run's rows under keys with the prefixes of
``runs.RECHECK_PREFIXES``; this module reads them by name pattern, so new keys show up in the
table without a change here.
"""

from __future__ import annotations

import math

from scipy.stats import spearmanr

from respmatch.evaluate import physical


def physical_energy(row: dict) -> float | None:
    """The row's physical energy per atom, as the judges read it (evaluate.physical)."""
    value = physical.physical_energy(row["recheck"])
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    """Spearman's ρ of (Ẽ, physical) pairs; None with fewer than three or no spread."""
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2 or len({b for _, b in pairs}) < 2:
        return None
    return float(spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic)


def _share(rows: list[dict], suffix: str) -> str | None:
    """Share of rechecked rows whose key ending in ``suffix`` is true, e.g. survived."""
    flags = [v for r in rows for k, v in r["recheck"].items() if k.endswith(suffix) and isinstance(v, bool)]
    return f"{sum(flags) / len(flags):.1%} of {len(flags)}" if flags else None


def summary(rows: list[dict]) -> dict | None:
    """Card and per-composition ρ of the rechecked structures; None when nothing was rechecked."""
    checked = [r for r in rows if r["recheck"]]
    if not checked:
        return None
    potentials = sorted({f"{r['recheck'].get('physical_potential', '?')} {r['recheck'].get('physical_version', '')}".strip() for r in checked})
    measured = [(r["energy"], physical_energy(r), r["composition"]) for r in checked]
    # Pairs with Ẽ: a re-check of a plain structure file has none, and then no ρ to show.
    scored = [(e, p, c) for e, p, c in measured if e is not None and p is not None]
    card = [
        ("potential", ", ".join(potentials)),
        ("structures rechecked", f"{len(checked)} of {len(rows)}"),
        ("with a physical energy", str(sum(p is not None for _, p, _ in measured))),
        ("failed", str(sum(1 for r in checked if r["recheck"].get("physical_error")))),
    ]
    for label, suffix in (("relaxation converged", "_converged"), ("survived relaxation", "_survived")):
        value = _share(checked, suffix)
        if value:
            card.append((label, value))
    if scored:
        overall = spearman([(e, p) for e, p, _ in scored])
        card.append(("Spearman ρ(Ẽ, E_phys), all", "-" if overall is None else f"{overall:.3f}"))
    by_composition = {}
    for composition in sorted({c for _, _, c in scored}, key=lambda c: (len(c), c)):
        pairs = [(e, p) for e, p, c in scored if c == composition]
        rho = spearman(pairs)
        by_composition[composition] = {"n": len(pairs), "rho": "-" if rho is None else f"{rho:.3f}"}
    return {"card": card, "by_composition": by_composition}
