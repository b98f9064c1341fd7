"""Judge generated crystals (docs/design.md §1.4): validity, space group, uniqueness, novelty and
the crystal structure prediction (CSP) match of CDVAE, DiffCSP and FlowMM.

Structures are grouped by reduced formula: the tries of one composition.  A try is *valid* when
no two atoms (periodic images included) are closer than 0.5 Å.  A valid try *matches* when
pymatgen's ``StructureMatcher(stol=0.5, ltol=0.3, angle_tol=10)`` returns an RMS displacement
for it against a reference structure of its formula (``get_rms_dist`` is not None: CDVAE's
criterion); its ``rms`` is the smallest over those references, normalised by (V/N)^(1/3).
Per formula, ``distinct`` counts the distinct structures among the valid tries (StructureMatcher
groups formed in order of Ẽ, ``respmatch.matching``; the summary's ``unique`` is Σ distinct / Σ
valid), and with training data ``novel`` counts valid tries that match no training structure of
the formula.  With a reference:

- ``matched_any``: some try matches (the "k tries" rate), ``rmse_any`` the best of their RMSEs;
- ``matched_lowest``: the valid try of lowest Ẽ per atom matches (the "1 try" rate: Ẽ is the
  only ranking a search has).  Unconverged tries are ranked too: a relaxation stopped at its
  step cap still has a meaningful Ẽ, and ranking only converged ones would leave formulas
  whose tries all hit the cap without a pick.  ``rmse_lowest`` is that try's RMSE (with
  ``rank_by="physical"`` the try of lowest physical energy from ``respmatch recheck`` is the pick);
- ranked budget (``keep`` = K): the valid converged tries grouped into distinct structures and
  ranked by Ẽ, as ``generate --tries M --keep K`` reports them; ``matched_top1``: the lowest
  distinct structure (its lowest-Ẽ member) matches, ``matched_topk``: one of the K lowest does;
  ``rmse_top1``, ``rmse_topk`` as above.

The summary's match rates count formulas that have a reference; its RMSEs are means over the
matched formulas (as CDVAE and DiffCSP report them).
"""

from __future__ import annotations

import math

from ase import Atoms
from pymatgen.core import Structure
from pymatgen.core.structure_matcher import StructureMatcher

from respmatch.evaluate.result import Evaluation, share
from respmatch.matching import best_rms, by_formula, csp_matcher, group_distinct, to_structure
from respmatch.record import judged_fields, physical_energy
from respmatch.symmetry import space_group

KEEP = 20  # distinct structures kept per formula by the ranked-budget rates


def evaluate_crystals(
    structures: list[Atoms],
    reference: list[Atoms] | None = None,
    training: list[Atoms] | None = None,
    *,
    min_distance: float = 0.5,
    symprec: float = 0.1,
    keep: int = KEEP,
    rank_by: str = "pseudo",
) -> Evaluation:
    """Validity, space group, distinct structures per formula; with ``reference`` the CSP match
    rates and RMSEs; with ``training`` the share of valid structures that match no training
    structure of their formula (novel)."""
    matcher = csp_matcher()
    crystals = [to_structure(atoms) for atoms in structures]  # converted once, reused by every fit
    formulas = [crystal.composition.reduced_formula for crystal in crystals]
    references = by_formula(reference, set(formulas)) if reference is not None else None
    known = by_formula(training, set(formulas)) if training is not None else None

    records = []
    for k, (atoms, crystal, formula) in enumerate(zip(structures, crystals, formulas)):
        distance = shortest_distance(crystal)
        valid = distance > min_distance
        symbol, number = space_group(crystal, symprec) if valid else (None, None)
        record = {
            **judged_fields(atoms, k),
            "composition": str(atoms.info.get("composition", atoms.get_chemical_formula())),
            "formula": formula,
            "valid": valid,
            "min_distance": distance,
            "spacegroup": symbol,
            "spacegroup_number": number,
            "physical_energy_per_atom": physical_energy(atoms.info),
        }
        if references is not None:  # matched: None where the formula has no reference
            candidates = references.get(formula)
            rms = best_rms(matcher, crystal, candidates) if valid and candidates else None
            record.update(matched=(rms is not None) if candidates else None, rms=rms)
        if known is not None:
            record["novel"] = (
                not any(matcher.fit(crystal, other) for other in known.get(formula, [])) if valid else None
            )
        records.append(record)

    groups = {}
    for formula in dict.fromkeys(formulas):
        members = [(r, c) for r, c in zip(records, crystals) if r["formula"] == formula]
        judged = references is not None and formula in references
        groups[formula] = formula_metrics(
            matcher, members, novelty=known is not None, judged=judged, keep=keep,
            rank_key=f"{rank_by}_energy_per_atom",
        )
    return Evaluation(
        kind="crystal",
        summary=summary(records, groups, novelty=known is not None, judged=references is not None, keep=keep),
        groups=groups,
        records=records,
    )


def formula_metrics(
    matcher: StructureMatcher,
    members: list[tuple[dict, Structure]],
    *,
    novelty: bool,
    judged: bool,
    keep: int,
    rank_key: str = "pseudo_energy_per_atom",
) -> dict:
    """Metrics of one formula's tries (records with their structures); match metrics if
    ``judged`` (the formula has a reference).  The lowest ``rank_key`` picks the "1 try"."""
    valid = [(r, c) for r, c in members if r["valid"]]
    # Tries without that energy rank after those with one; ties keep input order.
    lowest = min(
        (r for r, _ in valid),
        key=lambda r: math.inf if r[rank_key] is None else r[rank_key],
        default=None,
    )
    metrics = {
        "tries": len(members),
        "valid": len(valid),
        "converged": sum(bool(r["converged"]) for r, _ in members),
        "distinct": len(distinct(matcher, valid)),
    }
    if lowest:
        metrics["lowest_index"] = lowest["index"]
        metrics["lowest_energy"] = lowest[rank_key]
        if lowest["spacegroup"]:
            metrics["spacegroup"] = f"{lowest['spacegroup']} ({lowest['spacegroup_number']})"
    if novelty:
        metrics["novel"] = sum(bool(r["novel"]) for r, _ in valid)
    if judged:
        rms = [r["rms"] for r, _ in members if r["matched"]]
        metrics["matched_any"] = bool(rms)
        metrics["matched_lowest"] = bool(lowest and lowest["matched"])
        metrics["rmse_any"] = min(rms, default=math.nan)
        metrics["rmse_lowest"] = lowest["rms"] if lowest and lowest["matched"] else math.nan
        ranked = distinct(matcher, [(r, c) for r, c in valid if r["converged"]], keep)
        rms = [r["rms"] for r in ranked]
        metrics["matched_top1"] = bool(rms) and rms[0] is not None
        metrics["matched_topk"] = any(value is not None for value in rms)
        metrics["rmse_top1"] = rms[0] if metrics["matched_top1"] else math.nan
        metrics["rmse_topk"] = min((value for value in rms if value is not None), default=math.nan)
    return metrics


def distinct(matcher: StructureMatcher, members: list[tuple[dict, Structure]], keep: int | None = None) -> list[dict]:
    """The records of the distinct structures' lowest-Ẽ members, lowest Ẽ first (at most ``keep``).
    An unconverged try's Ẽ is not that of a minimum: it is compared with every group."""
    energies = [r["pseudo_energy_per_atom"] if r["converged"] else None for r, _ in members]
    groups, _ = group_distinct([c for _, c in members], energies, keep, matcher=matcher)
    return [members[g.index][0] for g in groups]


def summary(records: list[dict], groups: dict, *, novelty: bool, judged: bool, keep: int) -> dict:
    n_valid = sum(r["valid"] for r in records)
    result = {
        "n": len(records),
        "compositions": len(groups),
        "valid": share(n_valid, len(records)),
        "converged": share(sum(r["converged"] for r in records), len(records)),
        "unique": share(sum(g["distinct"] for g in groups.values()), n_valid),
    }
    if novelty:
        result["novel"] = share(sum(bool(r["novel"]) for r in records), n_valid)
    if judged:
        scored = [g for g in groups.values() if "matched_any" in g]
        any_rms = [g["rmse_any"] for g in scored if g["matched_any"]]
        lowest_rms = [g["rmse_lowest"] for g in scored if g["matched_lowest"]]
        result.update(
            with_reference=len(scored),
            match_rate_any=share(len(any_rms), len(scored)),
            match_rate_lowest=share(len(lowest_rms), len(scored)),
            rmse_any=share(sum(any_rms), len(any_rms)),
            rmse_lowest=share(sum(lowest_rms), len(lowest_rms)),
            keep=keep,
        )
        for rank in ("top1", "topk"):
            rms = [g[f"rmse_{rank}"] for g in scored if g[f"matched_{rank}"]]
            result[f"match_rate_{rank}"] = share(len(rms), len(scored))
            result[f"rmse_{rank}"] = share(sum(rms), len(rms))
    return result


def shortest_distance(crystal: Structure) -> float:
    """Shortest distance between two atoms, periodic images included (an atom and its own image
    too, so a collapsed one-atom cell is caught)."""
    radius = 3.0
    while True:
        distances = crystal.get_neighbor_list(radius)[3]
        if len(distances):
            return float(distances.min())
        radius *= 2
