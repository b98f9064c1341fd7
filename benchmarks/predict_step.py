"""``benchmarks/csp.py --predict``: the predict funnel on held-out formulas, judged, and with
``--baseline plain-uMLIP`` the same kinds of starts relaxed directly with the universal potential.

Per formula the funnel's ranked structures (relaxed) are matched against every held-out
structure of the formula (StructureMatcher, the CSP tolerances): @1 the first, @5 one of the
first five distinct.  Reach: whether the shortlist (each pre-score, several K) holds a group whose
RM structure matches, and whether any try does.  Pick: where a relaxed candidate matches but
ranks below a wrong one, the energy gap and convergence of both.

The baseline draws the funnel's own starts (same seed, same share of symmetric starts from the
same space-group prior, same cell volumes: try i is the funnel's try i) and relaxes them with the
potential (FIRE on FrechetCellFilter, the funnel's fmax, its screen + full step cap) until it
has spent the funnel's CPU-seconds per formula; its lowest-energy structure is its answer.
Budgets are CPU-seconds of this process (one torch thread: wall time on an idle core), so other
work on a shared machine does not tilt the comparison.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time

import torch
from pymatgen.core.structure_matcher import StructureMatcher

import respmatch
from respmatch.evaluate.crystals import best_rms
from respmatch.matching import MATCHER_TOLERANCES, group_distinct, to_structure
from respmatch.predict.groups import distinct_tries
from respmatch.predict.records import Distinct, Relaxation, candidate, formula_of
from respmatch.predict.shortlist import SCORES, shortlist
from respmatch.recheck.potentials import ase_calculator, batched_potential
from respmatch.search.relax import BatchRelaxer, Job, Stage
from respmatch.search.spec import SearchSpec
from respmatch.run import open_run


def add_options(parser) -> None:
    group = parser.add_argument_group("predict funnel (respmatch predict); M is --tries")
    group.add_argument("--predict", action="store_true", help="run the funnel on the held-out formulas")
    group.add_argument("--predict-keep", type=int, default=10, help="K shortlisted")
    group.add_argument("--predict-relax", type=int, default=5, help="fully relaxed of the shortlist")
    group.add_argument("--predict-score", default="mixed", choices=SCORES)
    group.add_argument("--predict-screen-steps", type=int, default=40)
    group.add_argument("--predict-max-steps", type=int, default=300, help="full relaxation step cap")
    group.add_argument("--predict-potential", default="sevennet-0")
    group.add_argument("--predict-resume", action="store_true", help="continue the funnel's run database")
    group.add_argument("--reach-sizes", default="5,10,20", help="K values of the shortlist-reach table")
    group.add_argument("--reach-tries", default="20,50", help="smaller M for the reach table: the first M tries regrouped")
    group.add_argument("--second-potential", default="chgnet",
                       help="single points of the ranked structures, to measure it as a tie-breaker ('' : none)")
    group.add_argument("--baseline", choices=["plain-uMLIP"], help="also relax the starts directly, same CPU budget")
    group.add_argument("--baseline-formulas", type=int, help="the baseline on the first N formulas only")


def matches(matcher, atoms, references) -> bool:
    return best_rms(matcher, to_structure(atoms), references) is not None


TIE_WINDOWS = (0.01, 0.025, 0.05, 1.0)  # eV/atom of the first potential


def second_energies(name: str, structures: list) -> list[float] | None:
    """Energies per atom of the structures with a second potential (single points), if asked."""
    if not name or not structures:
        return None
    energies = []
    for atoms in structures:
        atoms.calc = ase_calculator(name)
        energies.append(atoms.get_potential_energy() / len(atoms))
    return energies


def tie_break(ranking: list[dict], second: list[float], matched: list[bool], window: float) -> bool:
    """Whether the pick is right when the structures within ``window`` of the lowest are ranked
    by the mean of both potentials' energies above their own lowest among them."""
    near = [k for k, e in enumerate(ranking) if e["above_lowest"] <= window]
    low = min(second[k] for k in near)
    pick = min(near, key=lambda k: ranking[k]["above_lowest"] + second[k] - low)
    return matched[pick]


def at1_with(row: dict, r: int) -> bool:
    """Whether the pick among the r lowest after the screen is right (all relaxed, if fewer)."""
    by = row["at1_by_relaxed"]
    return bool(by) and by[min(r, max(by))]


def run(model, chosen: dict, out_dir, args) -> dict:
    """The funnel on the chosen held-out formulas ({reduced formula: structures}); the summary."""
    formulas = {structures[0].get_chemical_formula(): reduced for reduced, structures in chosen.items()}
    references = {reduced: [to_structure(a) for a in structures] for reduced, structures in chosen.items()}
    out = out_dir / "predict.db"
    if not args.predict_resume:
        out.unlink(missing_ok=True)
    settings = respmatch.PredictSettings(
        tries=args.tries, keep=args.predict_keep, relax=args.predict_relax, score=args.predict_score,
        potential=args.predict_potential, screen_steps=args.predict_screen_steps, seed=args.seed,
        max_steps=args.predict_max_steps,
        symmetry=args.symmetry if args.symmetry else 0.5,
    )
    result = respmatch.predict(list(formulas), model, out, settings=settings, resume=args.predict_resume,
                               workers=args.workers, scheduler=args.scheduler, progress=False)
    matcher = StructureMatcher(**MATCHER_TOLERANCES)
    stored = open_run(out)
    stages = stored.stages
    distinct = stages.records("distinct", Distinct)
    relaxed, screened = stages.records("relax", Relaxation), stages.records("screen", Relaxation)
    tries = {int(a.info["index"]): a for a in stored.structures()}
    sizes = [int(k) for k in args.reach_sizes.split(",")]
    smaller = [int(m) for m in args.reach_tries.split(",") if m and int(m) < args.tries]
    rows = []
    for formula, reduced in formulas.items():
        refs, groups = references[reduced], distinct[formula].groups
        group_match = [matches(matcher, tries[g["members"][0]], refs) for g in groups]
        ranking = result["rankings"][formula]
        ranked_match = [matches(matcher, relaxed[candidate(formula, e["best"])].atoms(), refs) for e in ranking]
        mine = {k: r for k, r in relaxed.items() if formula_of(k) == formula}
        relaxed_match = {k: matches(matcher, r.atoms(), refs) for k, r in mine.items()}
        # Fewer tries: the first m of them are exactly an m-try run (start i depends on seed and i only).
        base = min(a.info["index"] for a in tries.values() if a.info["composition"] == formula)
        reach_m = {}
        for m in smaller:
            prefix = distinct_tries([tries[base + i] for i in range(m)])
            hit = [matches(matcher, tries[g["members"][0]], refs) for g in prefix]
            reach_m[m] = {"any": any(hit), **{s: {k: any(hit[g] for g in shortlist(prefix, k, s)) for k in sizes}
                                              for s in SCORES}}
        # Fewer full relaxations: the r lowest after the screen, of those relaxed.
        order = sorted(mine, key=lambda k: (screened[k].energy_per_atom is None, screened[k].energy_per_atom or 0))
        by_r = {}
        for r in range(1, len(order) + 1):
            pick = min(order[:r], key=lambda k: mine[k].energy_per_atom)
            by_r[r] = relaxed_match[pick]
        second = second_energies(args.second_potential, [relaxed[candidate(formula, e["best"])].atoms() for e in ranking])
        row = {
            "formula": formula,
            "tie_break": {w: tie_break(ranking, second, ranked_match, w) for w in TIE_WINDOWS} if second else {},
            "reach_m": reach_m,
            "at1_by_relaxed": by_r,
            "any_try": any(group_match),
            "at1": bool(ranked_match[:1] and ranked_match[0]),
            "at5": any(ranked_match[:5]),
            "relaxed_any": any(relaxed_match.values()),
            "reach": {s: {k: any(group_match[g] for g in shortlist(groups, k, s)) for k in sizes} for s in SCORES},
            "groups": len(groups),
            "relax_steps": [screened[k].steps + r.steps for k, r in mine.items()],
        }
        if row["relaxed_any"] and not row["at1"]:  # the physics had the right one and ranked it lower
            right = min((r.energy_per_atom, k) for k, r in mine.items() if relaxed_match[k])
            first = relaxed[candidate(formula, ranking[0]["best"])]
            row["pick"] = {"gap": right[0] - first.energy_per_atom, "right_converged": mine[right[1]].converged,
                           "first_converged": first.converged}
        rows.append(row)
    n = len(rows)
    cpu = sum(t["cpu_s"] for t in result["time"].values() if t)  # CPU of this process (1 thread: ~wall)
    wall = sum(t["wall_s"] for t in result["time"].values() if t)
    summary = {
        "formulas": n, "tries": args.tries, "keep": args.predict_keep, "relax": args.predict_relax,
        "score": args.predict_score, "screen_steps": args.predict_screen_steps,
        "at1": sum(r["at1"] for r in rows) / n, "at5": sum(r["at5"] for r in rows) / n,
        "shortlist_reach": {s: {k: sum(r["reach"][s][k] for r in rows) / n for k in sizes} for s in SCORES},
        "relaxed_any": sum(r["relaxed_any"] for r in rows) / n, "any_try": sum(r["any_try"] for r in rows) / n,
        "cpu_s_per_formula": cpu / n, "wall_s_per_formula": wall / n,
        "time": result["time"], "groups_per_formula": statistics.mean(r["groups"] for r in rows),
        "mean_steps_from_rm": statistics.mean(s for r in rows for s in r["relax_steps"]) if rows else None,
        "picks_missed": [dict(formula=r["formula"], **r["pick"]) for r in rows if "pick" in r],
        "at1_tie_break": {w: sum(r["tie_break"][w] for r in rows if r["tie_break"]) / n for w in TIE_WINDOWS}
        if args.second_potential else {},
        "at1_by_relaxed": {r: sum(at1_with(row, r) for row in rows) / n for r in range(1, args.predict_relax + 1)},
        "reach_by_tries": {m: {"any": sum(r["reach_m"][m]["any"] for r in rows) / n,
                               **{s: {k: sum(r["reach_m"][m][s][k] for r in rows) / n for k in sizes} for s in SCORES}}
                           for m in smaller},
    }
    print(f"\n## Predict funnel: M={args.tries}, K={args.predict_keep}, relaxed {args.predict_relax}, "
          f"score {args.predict_score}, screen {args.predict_screen_steps} steps, {n} formulas")
    print(f"@1 {summary['at1']:.1%}, @5 distinct {summary['at5']:.1%}; one relaxed candidate right "
          f"{summary['relaxed_any']:.1%}; some try right {summary['any_try']:.1%}; "
          f"{summary['groups_per_formula']:.1f} groups per formula")
    print("shortlist reach (share of formulas whose shortlist holds the known structure):")
    print("score    " + "  ".join(f"K={k:<4}" for k in sizes))
    for s in SCORES:
        print(f"{s:<8} " + "  ".join(f"{summary['shortlist_reach'][s][k]:>6.1%}" for k in sizes))
    print(f"cost: {summary['cpu_s_per_formula']:.1f} CPU-s per formula (wall {summary['wall_s_per_formula']:.1f} s); "
          "by stage (CPU-s): " + ", ".join(f"{s} {t['cpu_s']:.0f}" for s, t in result["time"].items() if t))
    for m, reach in summary["reach_by_tries"].items():
        print(f"M={m} (first {m} tries regrouped): some try right {reach['any']:.1%}; reach " + "; ".join(
            f"{s} " + "/".join(f"{reach[s][k]:.0%}" for k in sizes) for s in SCORES) + f" (K={'/'.join(map(str, sizes))})")
    print("@1 with fewer full relaxations (the r lowest after the screen): "
          + ", ".join(f"r={r} {v:.1%}" for r, v in summary["at1_by_relaxed"].items()))
    if summary["at1_tie_break"]:
        print(f"@1 with {args.second_potential} single points as a tie-breaker among the ranked structures within a "
              "window of the lowest (mean of both potentials' energies above their own lowest): "
              + ", ".join(f"{w * 1000:.0f} meV/atom {v:.1%}" for w, v in summary["at1_tie_break"].items()))
    for miss in summary["picks_missed"]:
        print(f"  pick missed {miss['formula']}: right one {miss['gap'] * 1000:+.1f} meV/atom above the first; "
              f"converged: right {miss['right_converged']}, first {miss['first_converged']}")
    if args.baseline:  # its budget: the funnel's mean CPU-seconds per formula
        some = dict(list(formulas.items())[: args.baseline_formulas])
        summary["baseline"] = baseline(model, some, references, summary["cpu_s_per_formula"], settings, args)
        same = [r for r in rows if r["formula"] in some]
        summary["baseline"]["funnel_same_formulas"] = {"at1": sum(r["at1"] for r in same) / len(same),
                                                       "at5": sum(r["at5"] for r in same) / len(same), "n": len(same)}
        print(f"the funnel on the same {len(same)} formulas: @1 {summary['baseline']['funnel_same_formulas']['at1']:.1%}, "
              f"@5 distinct {summary['baseline']['funnel_same_formulas']['at5']:.1%}")
    (out_dir / "predict.json").write_text(json.dumps({"summary": summary, "formulas": rows}, indent=1) + "\n")
    return summary


def baseline(model, formulas: dict, references: dict, budget: float, settings, args) -> dict:
    """The funnel's starts relaxed directly with the potential, ``budget`` CPU-seconds per formula."""
    model = respmatch.load_model(model) if isinstance(model, str) else model
    potential = batched_potential(settings.potential)  # loaded before the clock starts
    stage = Stage("physical", fmax=settings.fmax, max_steps=settings.screen_steps + settings.max_steps, cell="full")
    matcher = StructureMatcher(**MATCHER_TOLERANCES)
    options = {"symmetry": settings.symmetry, "space_groups": settings.space_groups}
    rows = []
    for formula, reduced in formulas.items():
        spec = SearchSpec.build(model, formula, 10**6, "crystal", None, settings.seed, options)
        jobs = (Job(key=i, atoms=spec.start(i), stages=(stage,)) for i in itertools.count())
        relaxer = BatchRelaxer(potential, batch_size=16, dtype=torch.float64)
        started, done = time.process_time(), []
        for result in relaxer.run(jobs):
            done.append(result)
            if time.process_time() - started > budget:
                break
        energies = [r.energy / len(r.atoms) for r in done]
        groups, _ = group_distinct([to_structure(r.atoms) for r in done], energies)
        hits = [matches(matcher, done[g.index].atoms, references[reduced]) for g in groups]
        rows.append({"formula": formula, "relaxed": len(done), "at1": bool(hits[:1] and hits[0]),
                     "at5": any(hits[:5]), "any": any(hits),
                     "steps": statistics.mean(r.steps for r in done), "converged": sum(r.converged for r in done)})
    n = len(rows)
    summary = {"at1": sum(r["at1"] for r in rows) / n, "at5": sum(r["at5"] for r in rows) / n,
               "any": sum(r["any"] for r in rows) / n, "relaxed_per_formula": statistics.mean(r["relaxed"] for r in rows),
               "mean_steps_from_start": statistics.mean(r["steps"] for r in rows), "budget_cpu_s": budget, "rows": rows}
    print(f"\n## Baseline plain-uMLIP: the same starts relaxed with {settings.potential}, {budget:.0f} CPU-s per formula")
    print(f"@1 {summary['at1']:.1%}, @5 distinct {summary['at5']:.1%}, any relaxed {summary['any']:.1%}; "
          f"{summary['relaxed_per_formula']:.1f} relaxations per formula, {summary['mean_steps_from_start']:.0f} steps "
          "each on average (from the raw starts)")
    return summary
