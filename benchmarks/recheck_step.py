"""The physical re-check step shared by the CSP and QM7 benchmarks (their ``--recheck``)."""

from __future__ import annotations

import argparse
import math

from ase.io import write

import respmatch
from respmatch.evaluate import evaluate


def add_options(parser: argparse.ArgumentParser, potential: str, top: int | None, relax: bool) -> None:
    group = parser.add_argument_group("physical re-check (respmatch recheck)")
    group.add_argument("--recheck", action="store_true", help="recheck the generated structures and judge Ẽ")
    group.add_argument("--recheck-potential", default=potential)
    group.add_argument("--recheck-top", type=int, default=top, help="K lowest-Ẽ per composition (default: %(default)s)")
    group.add_argument("--recheck-relax", action=argparse.BooleanOptionalAction, default=relax)
    group.add_argument("--recheck-fmax", type=float, default=0.05)
    group.add_argument("--recheck-max-steps", type=int, default=300)
    group.add_argument("--recheck-batch-size", type=int, default=16, help="cells per call of a batched potential")
    group.add_argument("--recheck-resume", action="store_true", help="continue an interrupted re-check")


def describe_cluster(args) -> str:
    if args.scheduler:
        return f"Dask cluster at {args.scheduler}"
    return f"{args.workers} Dask worker(s)" if args.workers else "1 process"


def run(generated, out_dir, args, kind: str, reference=None, training=None):
    """Recheck ``generated`` into OUT/recheck.db, evaluate it, print the table; the summary."""
    source, out = out_dir / "generated_for_recheck.extxyz", out_dir / "recheck.db"
    if not args.recheck_resume:
        write(source, generated, format="extxyz")
        out.unlink(missing_ok=True)
    summary = respmatch.recheck(
        source, args.recheck_potential, relax=args.recheck_relax, fmax=args.recheck_fmax,
        max_steps=args.recheck_max_steps, top=args.recheck_top, out=out, resume=args.recheck_resume,
        workers=args.workers, scheduler=args.scheduler, batch_size=args.recheck_batch_size, threads=args.threads,
    )
    settings = (f"{summary['potential']}, {'relaxed' if args.recheck_relax else 'single point'}"
                f"{f' (fmax {args.recheck_fmax}, at most {args.recheck_max_steps} steps)' if args.recheck_relax else ''}, "
                f"{'top ' + str(args.recheck_top) + ' by Ẽ' if args.recheck_top else 'all'} per composition")
    print(f"\n## Physical re-check: {settings}")
    print(f"rechecked {summary['rechecked']} structures in {summary['seconds']:.0f} s "
          f"({summary['structures_per_second']:.3f} structures/s, {args.threads} threads, "
          f"{describe_cluster(args)}), {summary['failed']} failed -> {out}")
    evaluation = evaluate(out, kind, reference=reference, training=training)
    evaluation.write_json(out_dir / "recheck_evaluation.json")
    print(evaluation.table())
    s = evaluation.summary
    print(f"\nSpearman ρ(Ẽ, E_phys): pooled {s['spearman_pooled']:.3f}, mean per composition {s['spearman_mean']:.3f}")
    if kind == "crystal" and "match_rate_lowest" in s:
        ratio = s["match_rate_lowest_physical"] / s["match_rate_lowest"] if s["match_rate_lowest"] else math.inf
        print(f"1-try match rate: lowest Ẽ {s['match_rate_lowest']:.1%}, lowest physical energy "
              f"{s['match_rate_lowest_physical']:.1%} ({ratio:.2f}x; target >= 2x); within 0.1 eV/atom of the "
              f"lowest: {s['within_0.1_eV']:.1%}")
        if "match_rate_any_relaxed" in s:
            print(f"relaxed structures: lowest physical {s['match_rate_lowest_physical_relaxed']:.1%}, "
                  f"any {s['match_rate_any_relaxed']:.1%}")
    if kind == "molecule" and "refined_n" in s:
        print(f"{s['refined_n']} refined: strictly valid {s['strict_valid_before_refinement']:.1%} -> "
              f"{s['strict_valid_after_refinement']:.1%} (target >= 80%), lenient "
              f"{s['lenient_valid_before_refinement']:.1%} -> {s['lenient_valid_after_refinement']:.1%}, unique "
              f"{s['unique_before_refinement']:.1%} -> {s['unique_after_refinement']:.1%}, novel "
              f"{s['novel_before_refinement']:.1%} -> {s['novel_after_refinement']:.1%}; survived {s['refined_survived']:.1%}")
    return summary, evaluation
