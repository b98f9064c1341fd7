"""Command line: ``respmatch train | label | info | generate | recheck | export | evaluate | report | demo | predict``."""

from __future__ import annotations

import argparse
import ast
import json
import sys
import traceback

import torch

from respmatch.config import checked_options
from respmatch.errors import RespmatchError, describe
from respmatch.files import check_output
from respmatch.io import read_structures
from respmatch.labels import LabelConfig, export_labels, label_preset, with_pair_repulsion
from respmatch.search.spec import SEARCH_PRESETS
from respmatch.recheck.potentials import POTENTIALS
from respmatch.structures import Structures


def _key_values(pairs: list[str], option: str) -> dict:
    """Parse ``KEY=VALUE`` overrides; values are Python literals (numbers, tuples, booleans).

    Dashes in a key's last part become underscores (``min-distance``); a stage name before a dot
    is kept as it is (``kick-relax.fmax``).
    """
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise RespmatchError(f"{option} expects KEY=VALUE, got {pair!r}")
        stage, dot, field = key.strip().rpartition(".")
        key = stage + dot + field.replace("-", "_")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _labels(args, structures) -> LabelConfig:
    from respmatch.train import preset_for

    overrides = _key_values(args.label, "--label")
    return with_pair_repulsion(label_preset(args.preset or preset_for(structures), **overrides), structures)


def cmd_train(args) -> None:
    from respmatch.train import TrainConfig, train

    check_output(args.out, inputs=args.data)
    options = _key_values(args.train_option, "--train-option")
    config = TrainConfig(epochs=args.epochs, seed=args.seed, **checked_options(TrainConfig, options, "--train-option"))
    structures = read_structures(args.data)
    result = train(
        structures,
        args.out,
        preset=args.preset,
        label_config=_labels(args, structures),
        model_options=_key_values(args.model, "--model"),
        config=config,
        resume=args.resume,
        progress=not args.quiet,
    )
    best = result.best
    print(
        f"saved {args.out}: best epoch {best.get('epoch')}, "
        f"validation force RMSE {best.get('val_forces_rmse', float('nan')):.4f} eV/Å"
        + (
            f", stress RMSE {best['val_stress_rmse']:.4f} eV/Å³"
            if "val_stress_rmse" in best
            else ""
        )
    )


def cmd_label(args) -> None:
    check_output(args.out, inputs=args.data)
    structures = read_structures(args.data)
    config = _labels(args, structures)
    n = export_labels(args.out, Structures.from_atoms(structures), config, seed=args.seed)
    print(f"wrote {n} labelled structures to {args.out}")


def cmd_info(args) -> None:
    from respmatch.model import load_checkpoint

    from respmatch.builtin import BUILTIN_MODELS, model_path

    checkpoint = load_checkpoint(args.model)
    training = checkpoint.get("training", {})
    history = training.get("history", [])
    summary = {
        "model": str(model_path(args.model)),
        "built_in": BUILTIN_MODELS.get(args.model),
        "trained_on": training.get("n_structures"),
        "epochs_run": len(history),
        "training_seconds": round(sum(h["seconds"] for h in history)),
        "elements": checkpoint["elements"],
        "element_volumes": checkpoint["element_volumes"],
        "model_config": checkpoint["model_config"],
        "label_config": checkpoint["label_config"],
        "preset": training.get("preset"),
        "best": training.get("best"),
        "parameters": sum(v.numel() for v in checkpoint["state_dict"].values()),
    }
    print(json.dumps(summary, indent=2, default=str, ensure_ascii=False))


def cmd_generate(args) -> None:
    from respmatch.cluster import dask_client
    from respmatch.search.generate import generate
    from respmatch.search.starts import parse_volume_range

    volume = parse_volume_range(args.volume_per_atom) if args.volume_per_atom else None
    options = _key_values(args.option, "--option")
    if args.space_groups and not args.symmetry:
        raise RespmatchError("--space-groups chooses the groups of symmetric starts: give --symmetry too")
    options.update(symmetry=args.symmetry, keep_symmetry=args.keep_symmetry)
    if args.space_groups:
        options["space_groups"] = args.space_groups
    if args.keep is not None and args.keep <= 0:
        raise RespmatchError(f"--keep must be a positive number of structures, got {args.keep}")
    with dask_client(args.workers, args.scheduler) as client:
        summary = generate(
            args.model,
            args.composition,
            args.n,
            args.out,
            preset=args.preset,
            volume_per_atom=volume,
            seed=args.seed,
            batch_size=args.batch_size,
            device=args.device,
            dtype=getattr(torch, args.dtype),
            resume=args.resume,
            progress=not args.quiet,
            options=options,
            valid_only=args.valid_only,
            max_kicks=args.max_kicks,
            max_tries=args.max_tries,
            client=client,
            chunk_size=args.chunk_size,
        )
    print(
        f"{summary['stored']} structures in {summary['out']} "
        f"({summary['relaxed']} relaxed now in {summary['seconds']:.1f} s, "
        f"{summary['converged_share']:.0%} converged)"
    )
    if "tries" in summary:
        print(
            f"valid only: {summary['tries']} tries and {summary['kicks']} kicks "
            f"({summary['tries_per_molecule']:.2f} and {summary['kicks_per_molecule']:.2f} per stored molecule), "
            f"{summary['valid_unique']} distinct molecules, {summary['valid_unique_per_second']:.3f} per second"
        )
    if summary["stored"] < args.n:
        raise RespmatchError(
            f"{args.out}: only {summary['stored']} of {args.n} valid molecules within the tries allowed; "
            "raise --max-tries and continue with --resume"
        )
    if args.keep:
        from ase.io import write

        from respmatch.evaluate.ranking import rank_tries, ranked_table
        from respmatch.store import read_run

        structures = read_run(args.out)
        groups, beyond = rank_tries(structures, keep=args.keep)
        print(ranked_table(structures, groups, beyond))
        if args.ranked_out:
            ranked = [structures[g.index].copy() for g in groups]
            for rank, (atoms, group) in enumerate(zip(ranked, groups), 1):
                atoms.info.update(rank=rank, found_by=group.count)
            write(args.ranked_out, ranked, format="extxyz")
            print(f"wrote the {len(ranked)} ranked structures to {args.ranked_out}")


def cmd_recheck(args) -> None:
    from respmatch.recheck import recheck

    summary = recheck(
        args.source,
        args.potential,
        relax=args.relax,
        fmax=args.fmax,
        max_steps=args.max_steps,
        top=args.top,
        only_converged=args.only_converged,
        out=args.out,
        resume=args.resume,
        workers=args.workers,
        scheduler=args.scheduler,
        chunk_size=args.chunk_size,
        batch_size=args.batch_size,
        threads=args.threads or 1,
        progress=not args.quiet,
    )
    print(
        f"rechecked {summary['rechecked']} of {summary['selected']} selected structures with "
        f"{summary['potential']} in {summary['seconds']:.1f} s ({summary['failed']} failed) -> {summary['out']}"
    )


def cmd_export(args) -> None:
    from respmatch.store import export

    n = export(args.run, args.out, only_converged=args.converged_only)
    print(f"wrote {n} structures to {args.out}")


def cmd_evaluate(args) -> None:
    from respmatch.evaluate import evaluate
    from respmatch.evaluate.plots import plot_carbon_map, plot_group_bars

    inputs = [path for path in (args.source, args.reference, args.training) if path]
    for option in ("json", "plot"):
        if getattr(args, option):
            check_output(getattr(args, option), inputs=inputs, option=f"--{option}")
    evaluation = evaluate(args.source, args.kind, reference=args.reference, training=args.training,
        rank_by=args.rank_by,
    )
    print(evaluation.table())
    if args.json:
        evaluation.write_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        if args.kind == "carbon":
            plot_carbon_map(evaluation, args.plot)
        elif args.kind == "molecule":
            plot_group_bars(evaluation, ["strict_valid", "lenient_valid"], args.plot, "share of tries")
        else:
            plot_group_bars(evaluation, ["matched_any", "matched_lowest"], args.plot, "matched")
        print(f"wrote {args.plot}")


def cmd_report(args) -> None:
    from respmatch.reporting import report

    path = report(
        args.source, args.out, evaluation=args.evaluation or None, recheck=args.recheck, structures=args.structures
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a web browser")


def cmd_demo(args) -> None:
    from respmatch.demo import DemoSettings, run_demo

    settings = DemoSettings(**checked_options(DemoSettings, _key_values(args.option, "--option"), "--option"))
    result = run_demo(args.out, settings, progress=not args.quiet)
    print(result["table"])
    if result["prediction"]:
        print(f"\n{result['prediction']}")
    timings = result["timings"]
    predicted = f", predict {timings['predict_s']:.0f} s" if "predict_s" in timings else ""
    print(
        f"\ntrain {timings['train_s']:.0f} s, generate {timings['generate_s']:.0f} s, "
        f"evaluate {timings['evaluate_s']:.0f} s{predicted}, report {timings['report_s']:.0f} s; wrote "
        f"{args.out}/generated.extxyz, evaluation.txt, evaluation.json, carbon_map.png, report.html"
        + (", predict.db, predicted/" if result["prediction"] else "")
    )


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    from respmatch.predict.settings import PredictSettings
    from respmatch.predict.shortlist import SCORES

    d = PredictSettings()
    parser.add_argument("formulas", nargs="+", metavar="FORMULA", help="one cell's formula, e.g. SrTiO3 or Sr2Ti2O6")
    parser.add_argument("--model", default="mp20", help="a checkpoint or a built-in model (default mp20)")
    parser.add_argument("--out", required=True, help="the run database to write (RUN.db)")
    parser.add_argument("--tries", type=positive_int, default=d.tries, help=f"M: search tries per formula (default {d.tries})")
    parser.add_argument("--keep", type=positive_int, default=d.keep, help=f"K: distinct structures shortlisted (default {d.keep})")
    parser.add_argument("--relax", type=positive_int, default=d.relax,
                        help=f"of those, relaxed fully: the lowest after the screen (default {d.relax})")
    parser.add_argument("--score", choices=SCORES, default=d.score, help=f"shortlist pre-score (default {d.score})")
    parser.add_argument("--potential", default=d.potential, help=f"sevennet-0 or chgnet (default {d.potential})")
    parser.add_argument("--screen-steps", type=positive_int, default=d.screen_steps,
                        help=f"steps of the short relaxation of every shortlisted structure (default {d.screen_steps})")
    parser.add_argument("--fmax", type=float, default=d.fmax, help=f"full relaxation threshold, eV/Å (default {d.fmax})")
    parser.add_argument("--max-steps", type=positive_int, default=d.max_steps, help=f"full relaxation step cap (default {d.max_steps})")
    parser.add_argument("--symmetry", type=float, default=d.symmetry, help=f"share of symmetric starts (default {d.symmetry})")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--cif-dir", metavar="DIR", help="write DIR/FORMULA/RANK.cif for every ranked structure")
    parser.add_argument("--report", metavar="HTML", help="write the HTML report of the run, funnel included")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run; stored stages are not repeated")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="structures the search relaxes at once")
    parser.add_argument("--physics-batch-size", type=positive_int, default=16, help="cells per potential call")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    add_cluster_options(parser)
    parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def cmd_predict(args) -> None:
    from respmatch.predict.pipeline import predict
    from respmatch.predict.settings import PredictSettings

    settings = PredictSettings(
        tries=args.tries, keep=args.keep, relax=args.relax, score=args.score, potential=args.potential,
        screen_steps=args.screen_steps, fmax=args.fmax, max_steps=args.max_steps, symmetry=args.symmetry, seed=args.seed,
    )
    result = predict(
        args.formulas, args.model, args.out, settings=settings, resume=args.resume, cif_dir=args.cif_dir,
        report=args.report, batch_size=args.batch_size, physics_batch_size=args.physics_batch_size,
        device=args.device, workers=args.workers, scheduler=args.scheduler, progress=not args.quiet,
    )
    print(result["table"])
    spent = ", ".join(f"{stage} {t['wall_s']:.0f} s" for stage, t in result["time"].items() if t)
    print(f"\ntime: {spent}; run {result['out']}"
          + (f"; CIFs in {args.cif_dir}" if args.cif_dir else "") + (f"; report {args.report}" if args.report else ""))


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """--workers N / --scheduler ADDRESS: run on Dask workers, this process writing the results."""
    parser.add_argument(
        "--workers", type=int, metavar="N", help="start a local Dask cluster of N worker processes (1 thread each)"
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="join a running Dask cluster, e.g. tcp://host:8786"
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


positive_int.__name__ = "positive whole number"  # how argparse names the type in its message


class Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line (exit code 2) like every other fault."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The commands.  Each sets ``func`` (the command) and, where an interrupted run continues
    with ``--resume``, ``resumable=True``; every one takes ``--debug``."""
    parser = Parser(prog="respmatch", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    parser.set_defaults(resumable=False)
    commands = parser.add_subparsers(dest="command", required=True)
    add_command = commands.add_parser

    def command(name, **kwargs):
        """A command that takes --debug after its name too (not overriding one given before)."""
        sub = add_command(name, **kwargs)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        return sub

    commands.add_parser = command

    def add_label_options(p):
        p.add_argument("data", nargs="+", help="extxyz/xyz, CIF, CDVAE csv files or directories")
        p.add_argument("--preset", choices=["molecule", "crystal"], help="default: from periodicity")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--label", action="append", default=[], metavar="KEY=VALUE",
            help="override a label parameter, e.g. displacement_step=0.08 (repeatable)",
        )
        p.add_argument("--threads", type=positive_int, help="torch CPU threads")

    train = commands.add_parser("train", help="train a Response Matching model")
    add_label_options(train)
    train.add_argument("--out", required=True, help="model checkpoint to write (MODEL.pt)")
    train.add_argument("--epochs", type=positive_int, default=400)
    train.add_argument(
        "--model", action="append", default=[], metavar="KEY=VALUE",
        help="override a model option, e.g. cutoff=4.0 or hidden=(32,16) (repeatable)",
    )
    train.add_argument(
        "--train-option", action="append", default=[], metavar="KEY=VALUE",
        help="override a training option, e.g. batch_size=4 (repeatable)",
    )
    train.add_argument("--resume", action="store_true", help="continue an interrupted run")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train, resumable=True)

    label = commands.add_parser("label", help="write one labelled set to extxyz")
    add_label_options(label)
    label.add_argument("--out", required=True, help="extxyz file to write")
    label.set_defaults(func=cmd_label)

    generate = commands.add_parser("generate", help="random structure search on a trained model")
    generate.add_argument("--model", required=True)
    generate.add_argument("--composition", required=True, help="formula of one cell or molecule, e.g. C8")
    generate.add_argument("--n", "--tries", dest="n", type=positive_int, required=True,
                          help="number of structures (tries) to relax")
    generate.add_argument("--keep", type=int, metavar="K",
                          help="group the converged tries into distinct structures, print the K lowest-Ẽ "
                               "with how many tries found each")
    generate.add_argument("--ranked-out", help="with --keep: write the K structures here (extxyz)")
    generate.add_argument("--symmetry", type=float, nargs="?", const=1.0, default=0.0, metavar="FRACTION",
                          help="share of starts in a random space group (pyxtal); alone: all of them")
    generate.add_argument("--space-groups", metavar="SPEC",
                          help="groups of symmetric starts: 'prior' (the training crystals' frequencies, "
                               "default), 'all', or numbers and ranges such as 2-230 or 1,2,12-15")
    generate.add_argument("--keep-symmetry", action="store_true",
                          help="relax with symmetrised forces and stress (ASE's FixSymmetry)")
    generate.add_argument("--out", required=True, help="ase.db file (RUN.db) or database URL")
    generate.add_argument("--preset", choices=list(SEARCH_PRESETS))
    generate.add_argument("--volume-per-atom", help="Å³ per atom, V or a range A:B sampled evenly")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--batch-size", type=positive_int, default=64)
    generate.add_argument("--device", default="cpu", help="cpu or cuda")
    generate.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    generate.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="override a search setting, e.g. min_distance=0.8 or kick-relax.fmax=1e-4",
    )
    generate.add_argument(
        "--valid-only", action="store_true",
        help="molecules: store only strictly valid ones (RDKit judge), n of them; kick invalid tries",
    )
    generate.add_argument("--max-kicks", type=int, default=3, help="with --valid-only: kicks per try before a fresh start")
    generate.add_argument("--max-tries", type=int, help="with --valid-only: fresh starts at most (default 100 n)")
    generate.add_argument("--resume", action="store_true", help="continue an interrupted run")
    generate.add_argument("--threads", type=positive_int, help="torch CPU threads")
    generate.add_argument("--quiet", action="store_true", help="no progress bar")
    add_cluster_options(generate)
    generate.add_argument(
        "--chunk-size", type=int, help="structures per cluster task (default: four batches)"
    )
    generate.set_defaults(func=cmd_generate, resumable=True)

    recheck = commands.add_parser("recheck", help="judge (and relax) generated structures with a physical potential")
    recheck.add_argument("source", help="RUN.db (updated in place) or a structure file (then --out)")
    recheck.add_argument(
        "--potential", metavar="NAME",
        help=f"one of {', '.join(POTENTIALS)} (default: sevennet-0 for crystals, gfn2-xtb for molecules)",
    )
    recheck.add_argument("--relax", action="store_true", help="relax with the potential (FIRE; cell too for crystals)")
    recheck.add_argument("--fmax", type=float, default=0.05, help="relaxation force threshold, eV/Å")
    recheck.add_argument("--max-steps", type=int, default=300, help="relaxation step cap")
    recheck.add_argument("--top", type=int, help="only the K lowest-Ẽ structures of each composition")
    recheck.add_argument("--only-converged", action="store_true", help="skip structures whose RM search did not converge")
    recheck.add_argument("--out", help="write into this new database instead of the source run")
    recheck.add_argument("--resume", action="store_true", help="recheck only what an earlier run left")
    add_cluster_options(recheck)
    recheck.add_argument("--chunk-size", type=int, help="structures per cluster task (default: one batch, at least 4)")
    recheck.add_argument("--batch-size", type=int, default=16, help="crystals relaxed at once by a batched potential (default 16)")
    recheck.add_argument("--threads", type=positive_int, help="torch CPU threads per process (default 1)")
    recheck.add_argument("--quiet", action="store_true", help="no progress bar")
    recheck.set_defaults(func=cmd_recheck, resumable=True)

    export = commands.add_parser("export", help="write a run's structures to extxyz or CIF")
    export.add_argument("run", help="RUN.db")
    export.add_argument("--out", required=True, help="FILE.extxyz or FILE.cif")
    export.add_argument("--converged-only", action="store_true")
    export.set_defaults(func=cmd_export)

    evaluate = commands.add_parser("evaluate", help="judge generated structures and print a table")
    evaluate.add_argument("source", help="RUN.db or a structure file (extxyz, CIF, CDVAE csv)")
    evaluate.add_argument("--kind", required=True, choices=["molecule", "crystal", "carbon"])
    evaluate.add_argument("--reference", help="known structures to match (crystal, carbon)")
    evaluate.add_argument("--training", help="training structures, for novelty")
    evaluate.add_argument("--json", help="write summary, groups and per-structure records here")
    evaluate.add_argument("--plot", help="PNG: Ẽ-volume map (carbon) or rates per composition")
    evaluate.add_argument(
        "--rank-by", choices=["pseudo", "physical"], default="pseudo",
        help="pick each formula's 1 try by Ẽ or by the re-check's physical energy",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    report = commands.add_parser("report", help="write a self-contained HTML report of a run")
    report.add_argument("source", nargs="+", help="RUN.db (one run database or several)")
    report.add_argument("--out", required=True, help="HTML file to write (report.html)")
    report.add_argument(
        "--evaluation", action="append", default=[], metavar="EVAL.json",
        help="the judge's verdicts (respmatch evaluate --json) of a run (repeatable, one per run)",
    )
    report.add_argument(
        "--recheck", action="store_true",
        help="require the physical re-check section (shown anyway when the run holds re-check results)",
    )
    report.add_argument(
        "--structures", type=int, default=50, metavar="K",
        help="embed coordinates of the K lowest-Ẽ structures per composition (default 50)",
    )
    report.set_defaults(func=cmd_report)

    demo = commands.add_parser("demo", help="train on built-in diamond, generate carbon, evaluate")
    demo.add_argument("--out", default="respmatch-demo", help="directory for the results")
    demo.add_argument(
        "--option", action="append", default=[], metavar="KEY=VALUE",
        help="override a demo setting, e.g. epochs=20 or tries_per_size=10",
    )
    demo.add_argument("--threads", type=positive_int, help="torch CPU threads")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    predict = commands.add_parser("predict", help="the structure of a formula: search, distinct, physics, ranking")
    add_predict_arguments(predict)
    predict.set_defaults(func=cmd_predict, resumable=True)

    info = commands.add_parser("info", help="describe a trained model")
    info.add_argument("model")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command.  The one error path: an expected fault (``errors.describe``) is one line
    on stderr and exit code 2, Ctrl-C is exit code 130 (with the ``--resume`` hint where a run
    continues), anything else is a bug and keeps its traceback; ``--debug`` shows every one."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit:  # --help, or a usage error already printed as one line
        return exit.code
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        hint = "; the same command with --resume continues the run" if args.resumable else ""
        print(f"respmatch: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as error:
        message = describe(error)
        if message is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"respmatch: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
