"""Judge Ẽ against physics, where ``respmatch recheck`` left a verdict on the structures.

The physical energy of a try is its relaxed energy per atom when it was relaxed, else its
single-point energy at the RM structure.  Added to an evaluation:

- Spearman ρ between Ẽ/atom and the physical energy/atom, per composition (3 tries or more) and
  overall (``spearman_pooled`` over all tries, ``spearman_mean`` over compositions);
- crystals: ``e_above_lowest``, the energy above the lowest physical energy found for the
  formula (reference structures relaxed by the same potential included: a stability proxy that
  needs no convex hull), the share of tries within 0.1 eV/atom of it, and the match rate of the
  lowest-physical-energy try beside the lowest-Ẽ one; with relaxed structures, the same match
  rates for the relaxed structures;
- molecules: validity, uniqueness and novelty of the rechecked tries before and after refinement.
"""

from __future__ import annotations

import math
from collections import defaultdict

from ase import Atoms

from respmatch.evaluate.molecules import evaluate_molecules
from respmatch.evaluate.result import Evaluation, share, spearman
from respmatch.matching import best_rms, by_formula, csp_matcher, reduced_formula, to_structure
from respmatch.recheck.check import RecheckSettings, recheck_chunk
from respmatch.record import RecheckRecord, physical_energy

WITHIN = 0.1  # eV/atom, "near the lowest energy found"


def add_correlation(evaluation: Evaluation, structures: list[Atoms], group_key: str) -> None:
    """Spearman ρ(Ẽ, E_phys) per group and overall, into the evaluation."""
    groups = defaultdict(list)
    for record, atoms in zip(evaluation.records, structures):
        energy = physical_energy(atoms.info)
        record["physical_energy_per_atom"] = energy
        if energy is not None and record.get("pseudo_energy_per_atom") is not None:
            groups[record[group_key]].append((record["pseudo_energy_per_atom"], energy))
    per_group = {name: spearman(pairs) for name, pairs in groups.items()}
    for name, rho in per_group.items():
        evaluation.groups[name]["spearman"] = rho
    finite = [rho for rho in per_group.values() if not math.isnan(rho)]
    evaluation.summary["rechecked"] = sum(len(pairs) for pairs in groups.values())
    evaluation.summary["spearman_pooled"] = spearman([p for pairs in groups.values() for p in pairs])
    evaluation.summary["spearman_mean"] = share(sum(finite), len(finite))


def judge_crystals(
    evaluation: Evaluation,
    structures: list[Atoms],
    reference: list[Atoms] | None = None,
    reference_energies: dict[str, float] | None = None,
) -> None:
    """Energies above the lowest per formula, the 0.1 eV/atom share, and physical-ranking match
    rates (``reference_energies``: the lowest physical energy of each formula's references)."""
    add_correlation(evaluation, structures, "formula")
    lowest = dict(reference_energies or {})
    for record in evaluation.records:
        energy = record["physical_energy_per_atom"]
        if record["valid"] and energy is not None:
            lowest[record["formula"]] = min(energy, lowest.get(record["formula"], math.inf))
    near = []
    for record in evaluation.records:
        energy = record["physical_energy_per_atom"]
        record["e_above_lowest"] = None if energy is None or not record["valid"] else energy - lowest[record["formula"]]
        if record["e_above_lowest"] is not None:
            near.append(record["e_above_lowest"] <= WITHIN)
    evaluation.summary[f"within_{WITHIN}_eV"] = share(sum(near), len(near))

    relaxed = [atoms.info.get("relaxed") for atoms in structures]
    matcher = csp_matcher()
    references = by_formula(reference, set(evaluation.groups)) if reference is not None else {}
    rates = defaultdict(list)
    for formula, metrics in evaluation.groups.items():
        members = [(r, x) for r, x in zip(evaluation.records, relaxed) if r["formula"] == formula]
        scored = [(r, x) for r, x in members if r["e_above_lowest"] is not None]
        if not scored:
            continue
        best, best_relaxed = min(scored, key=lambda m: m[0]["physical_energy_per_atom"])
        metrics["lowest_physical_index"] = best["index"]
        metrics["lowest_physical_energy"] = best["physical_energy_per_atom"]
        if formula not in references:
            continue
        metrics["matched_lowest_physical"] = bool(best["matched"])
        rates["match_rate_lowest_physical"].append(metrics["matched_lowest_physical"])
        if any(x is not None for _, x in members):
            fits = [x is not None and best_rms(matcher, to_structure(x), references[formula]) is not None for _, x in members]
            metrics["matched_any_relaxed"] = any(fits)
            metrics["matched_lowest_physical_relaxed"] = bool(fits[[r for r, _ in members].index(best)])
            rates["match_rate_any_relaxed"].append(metrics["matched_any_relaxed"])
            rates["match_rate_lowest_physical_relaxed"].append(metrics["matched_lowest_physical_relaxed"])
    for key, values in rates.items():
        evaluation.summary[key] = share(sum(values), len(values))


def judge_molecules(evaluation: Evaluation, structures: list[Atoms], training: list[Atoms] | None) -> None:
    """Validity, uniqueness and novelty of the rechecked tries, before and after refinement.

    A try whose relaxation failed counts as not refined into a valid molecule."""
    add_correlation(evaluation, structures, "composition")
    chosen = [atoms for atoms in structures if "physical_potential" in atoms.info and atoms.info.get("recheck_relax")]
    if not chosen:
        return
    before = evaluate_molecules(chosen, training=training).summary
    failed = Atoms("H")  # stands in for a failed refinement: one H atom is never a valid molecule
    after = evaluate_molecules([atoms.info.get("relaxed", failed) for atoms in chosen], training=training).summary
    evaluation.summary["refined_n"] = len(chosen)
    evaluation.summary["refined_survived"] = share(sum(bool(a.info.get("relax_survived")) for a in chosen), len(chosen))
    for key in ("strict_valid", "lenient_valid", "unique", "novel"):
        evaluation.summary[f"{key}_before_refinement"] = before[key]
        evaluation.summary[f"{key}_after_refinement"] = after[key]


def reference_energies(structures: list[Atoms], reference: list[Atoms] | None) -> dict[str, float]:
    """The lowest physical energy per atom of each formula's reference structures, checked (and
    relaxed, if the tries were) with the same potential and settings as the tries."""
    if not reference:
        return {}
    verdict = next(RecheckRecord.from_pairs(a.info) for a in structures if "physical_potential" in a.info)
    settings = RecheckSettings.of(verdict)
    formulas = {reduced_formula(a) for a in structures}
    wanted = [a for a in reference if reduced_formula(a) in formulas]
    lowest = {}
    for atoms, record in zip(wanted, recheck_chunk(list(enumerate(wanted)), settings)):
        energy = physical_energy(record)
        if energy is not None:
            formula = reduced_formula(atoms)
            lowest[formula] = min(energy, lowest.get(formula, math.inf))
    return lowest
