"""Ranked search budget: tries grouped into distinct structures, ranked by Ẽ, counted."""

import numpy as np
from ase.build import bulk

from respmatch.evaluate.crystals import evaluate_crystals
from respmatch.evaluate.ranking import rank_tries


def tries():
    """Rocksalt NaCl found 3 times (rattled copies), CsCl-type twice, one unconverged rocksalt."""
    rng = np.random.default_rng(0)
    rocksalt = bulk("NaCl", "rocksalt", a=5.64)
    cesium = bulk("NaCl", "cesiumchloride", a=3.3)
    made = []
    for template, energy, converged in [
        (cesium, -1.20, True), (rocksalt, -1.00, True), (rocksalt, -0.995, True), (cesium, -1.19, True),
        (rocksalt, -1.01, True), (rocksalt, -2.0, False),
    ]:
        atoms = template.copy()
        atoms.rattle(0.02, seed=int(rng.integers(1000)))
        atoms.info.update(pseudo_energy_per_atom=energy, converged=converged)
        made.append(atoms)
    return made


def test_duplicates_are_grouped_ranked_by_energy_and_counted():
    groups, beyond = rank_tries(tries())
    assert [(g.index, g.count) for g in groups] == [(0, 2), (4, 3)]  # the unconverged try is left out
    assert sorted(groups[1].members) == [1, 2, 4] and groups[0].energy == -1.20 and beyond == 0
    groups, beyond = rank_tries(tries(), keep=1)
    assert [(g.index, g.count) for g in groups] == [(0, 2)] and beyond == 3


def test_energy_window_keeps_far_apart_tries_apart():
    """Tries whose Ẽ differ by more than the window are different minima, whatever their shape."""
    groups, _ = rank_tries(tries(), energy_window=0.001)
    assert [g.count for g in groups] == [1, 1, 1, 1, 1]
    groups, _ = rank_tries(tries(), energy_window=1.0)
    assert [g.count for g in groups] == [2, 3]


def test_judge_reports_top1_and_topk_of_the_ranked_distinct_structures():
    reference = [bulk("NaCl", "rocksalt", a=5.64)]
    evaluation = evaluate_crystals(tries(), reference=reference, keep=2)
    group = evaluation.groups["NaCl"]
    # The unconverged rocksalt has the lowest Ẽ: the plain lowest-Ẽ try matches, the ranked
    # budget (converged tries only) puts CsCl first and rocksalt second.
    assert group["matched_lowest"] and group["distinct"] == 2
    assert not group["matched_top1"] and group["matched_topk"]
    assert evaluation.summary["match_rate_top1"] == 0.0 and evaluation.summary["match_rate_topk"] == 1.0
    assert evaluate_crystals(tries(), reference=reference, keep=1).summary["match_rate_topk"] == 0.0
