"""Command line: ``respmatch train | label | info | generate | recheck | export | evaluate | report | demo | predict``.

A thin shell over the Python API: each command is a pair of small functions, one that adds its
arguments (``*_arguments``) and one that calls the API and prints (``run_*``).  Everything a
command does to the user's files is checked once, before any work, from what its arguments
declare (``arguments.CommandParser``).  A command imports what it needs when it runs, so
``respmatch --help`` loads neither torch nor the judges.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import traceback
import warnings
from contextlib import contextmanager

from respmatch.arguments import (
    CommandParser,
    Parser,
    batch_size,
    database,
    figure_path,
    fraction,
    one_line,
    non_negative_int,
    positive_float,
    positive_int,
    run_file,
    volume_range,
)
from respmatch.errors import RespmatchError, RespmatchWarning, describe

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


# --- options several commands share, added by one helper ----------------------------------------


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """--workers N / --scheduler ADDRESS (the benchmarks' parsers take them too)."""
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help="start a local Dask cluster of N worker processes (1 thread each)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="join a running Dask cluster, e.g. tcp://host:8786")


def add_shared(parser: CommandParser, *names: str) -> None:
    """The options commands share, each defined once: quiet, threads, resume, seed, force, cluster."""
    if "quiet" in names:
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if "threads" in names:
        parser.add_argument("--threads", type=positive_int, help="torch CPU threads")
    if "resume" in names:
        parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
        parser.set_defaults(resumable=True)
    if "seed" in names:
        parser.add_argument("--seed", type=non_negative_int, default=0)
    if "force" in names:
        parser.add_argument("--force", action="store_true",
                            help="replace existing output files that are not of the kind this command writes")
    if "cluster" in names:
        add_cluster_options(parser)
        parser.add_argument("--chunk-size", type=positive_int, help="structures per cluster task")
        parser.needs("--chunk-size", "--workers", "--scheduler")


def add_label_arguments(p: CommandParser) -> None:
    p.add_input("data", nargs="+", help="extxyz/xyz, CIF, CDVAE csv files or directories")
    p.add_argument("--preset", choices=["molecule", "crystal"], help="default: from periodicity")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="override a label parameter, e.g. displacement_step=0.08 (repeatable)")
    add_shared(p, "seed", "threads", "force")


def _labels(args, structures):
    from respmatch.labels import label_preset, with_pair_repulsion
    from respmatch.train import preset_for

    overrides = _key_values(args.label, "--label")
    return with_pair_repulsion(label_preset(args.preset or preset_for(structures), **overrides), structures)


# --- the commands ---------------------------------------------------------------------------------


def train_arguments(p: CommandParser) -> None:
    add_label_arguments(p)
    p.add_output("--out", kind="model", required=True, help="model checkpoint to write (MODEL.pt)")
    p.add_argument("--epochs", type=positive_int, default=400)
    p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                   help="override a model option, e.g. cutoff=4.0 or hidden=(32,16) (repeatable)")
    p.add_argument("--train-option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training option, e.g. batch_size=4 (repeatable)")
    add_shared(p, "resume", "quiet")


def run_train(args) -> None:
    from respmatch.config import checked_options
    from respmatch.io import read_structures
    from respmatch.train import TrainConfig, train

    options = checked_options(TrainConfig, _key_values(args.train_option, "--train-option"), "--train-option")
    config = TrainConfig(epochs=args.epochs, seed=args.seed, **options)
    structures = read_structures(args.data)
    result = train(structures, args.out, preset=args.preset, label_config=_labels(args, structures),
                   model_options=_key_values(args.model, "--model"), config=config, resume=args.resume,
                   progress=not args.quiet)
    best = result.best
    stress = f", stress RMSE {best['val_stress_rmse']:.4f} eV/Å³" if "val_stress_rmse" in best else ""
    print(f"saved {args.out}: best epoch {best.get('epoch')}, "
          f"validation force RMSE {best.get('val_forces_rmse', float('nan')):.4f} eV/Å{stress}")


def label_arguments(p: CommandParser) -> None:
    add_label_arguments(p)
    p.add_output("--out", kind="structures", required=True, help="extxyz file to write")


def run_label(args) -> None:
    from respmatch.io import read_structures
    from respmatch.labels import export_labels
    from respmatch.structures import Structures

    structures = read_structures(args.data)
    n = export_labels(args.out, Structures.from_atoms(structures), _labels(args, structures), seed=args.seed)
    print(f"wrote {n} labelled structures to {args.out}")


def info_arguments(p: CommandParser) -> None:
    p.add_input("model", help="MODEL.pt or a built-in model's name")


def run_info(args) -> None:
    import json

    from respmatch.model.checkpoint import describe_model

    print(json.dumps(describe_model(args.model), indent=2, default=str, ensure_ascii=False))


def generate_arguments(p: CommandParser) -> None:
    from respmatch.search.spec import SEARCH_PRESETS

    p.add_input("--model", required=True, help="MODEL.pt or a built-in model's name (mp20, perov5, diamond)")
    p.add_argument("--composition", required=True, help="formula of one cell or molecule, e.g. C8")
    p.add_argument("--n", "--tries", dest="n", type=positive_int, required=True, help="number of structures (tries) to relax")
    p.add_output("--out", kind="run database", type=run_file, required=True, help="run database to write (RUN.db)")
    p.add_argument("--keep", type=positive_int, metavar="K",
                   help="group the converged tries into distinct structures, print the K lowest-Ẽ "
                        "with how many tries found each")
    p.add_output("--ranked-out", kind="structures", help="with --keep: write the K structures here (extxyz)")
    p.needs("--ranked-out", "--keep")
    p.add_argument("--symmetry", type=float, nargs="?", const=1.0, default=0.0, metavar="FRACTION",
                   help="share of starts in a random space group (pyxtal); alone: all of them")
    p.add_argument("--space-groups", metavar="SPEC",
                   help="groups of symmetric starts: 'prior' (the training crystals' frequencies, "
                        "default), 'all', or numbers and ranges such as 2-230 or 1,2,12-15")
    p.needs("--space-groups", "--symmetry")
    p.add_argument("--keep-symmetry", action="store_true",
                   help="relax with symmetrised forces and stress (ASE's FixSymmetry)")
    p.add_argument("--preset", choices=list(SEARCH_PRESETS))
    p.add_argument("--volume-per-atom", type=volume_range, help="Å³ per atom, V or a range A:B sampled evenly")
    p.add_argument("--batch-size", type=batch_size, default=None, metavar="N|auto",
                   help="structures relaxed at once; auto (default): as many as an atom budget holds "
                        "(a fixed one on the CPU, the free memory's on a GPU)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a search setting, e.g. min_distance=0.8 or kick-relax.fmax=1e-4")
    p.add_argument("--valid-only", action="store_true",
                   help="molecules: store only strictly valid ones (RDKit judge), n of them; kick invalid tries")
    p.add_argument("--max-kicks", type=non_negative_int, default=3,
                   help="with --valid-only: kicks per try before a fresh start")
    p.add_argument("--max-tries", type=positive_int, help="with --valid-only: fresh starts at most (default 100 n)")
    p.needs("--max-kicks", "--valid-only")
    p.needs("--max-tries", "--valid-only")
    add_shared(p, "seed", "resume", "threads", "quiet", "cluster", "force")


def run_generate(args) -> None:
    import torch

    from respmatch.cluster import dask_client
    from respmatch.search.generate import generate

    options = {**_key_values(args.option, "--option"), "symmetry": args.symmetry, "keep_symmetry": args.keep_symmetry}
    if args.space_groups:
        options["space_groups"] = args.space_groups
    with dask_client(args.workers, args.scheduler) as client:
        summary = generate(
            args.model, args.composition, args.n, args.out, preset=args.preset, volume_per_atom=args.volume_per_atom,
            seed=args.seed, batch_size=args.batch_size, device=args.device, dtype=getattr(torch, args.dtype),
            resume=args.resume, progress=not args.quiet, options=options, valid_only=args.valid_only,
            max_kicks=args.max_kicks, max_tries=args.max_tries, client=client, chunk_size=args.chunk_size,
        )
    print(f"{summary['stored']} structures in {summary['out']} ({summary['relaxed']} relaxed now in "
          f"{summary['seconds']:.1f} s, {summary['converged_share']:.0%} converged)")
    if "tries" in summary:
        print(f"valid only: {summary['tries']} tries and {summary['kicks']} kicks "
              f"({summary['tries_per_molecule']:.2f} and {summary['kicks_per_molecule']:.2f} per stored molecule), "
              f"{summary['valid_unique']} distinct molecules, {summary['valid_unique_per_second']:.3f} per second")
    if summary["stored"] < args.n:
        raise RespmatchError(
            f"{args.out}: only {summary['stored']} of {args.n} valid molecules within the tries allowed; "
            "raise --max-tries and continue with --resume"
        )
    if args.keep:
        from respmatch.evaluate.ranking import rank_run

        ranked = rank_run(args.out, keep=args.keep)
        print(ranked.table())
        if args.ranked_out:
            ranked.write(args.ranked_out)
            print(f"wrote the {len(ranked.groups)} ranked structures to {args.ranked_out}")


def recheck_arguments(p: CommandParser) -> None:
    p.add_input("source", type=database, help="RUN.db (updated in place) or a structure file (then --out)")
    p.add_argument("--potential", metavar="NAME",
                   help="a physical potential: sevennet-0, chgnet, gfn2-xtb, gfn1-xtb "
                        "(default: sevennet-0 for crystals, gfn2-xtb for molecules)")
    p.add_argument("--relax", action="store_true", help="relax with the potential (FIRE; cell too for crystals)")
    p.add_argument("--fmax", type=positive_float, default=0.05, help="relaxation force threshold, eV/Å")
    p.add_argument("--max-steps", type=non_negative_int, default=300, help="relaxation step cap")
    p.needs("--fmax", "--relax")
    p.needs("--max-steps", "--relax")
    p.add_argument("--top", type=positive_int, help="only the K lowest-Ẽ structures of each composition")
    p.add_argument("--only-converged", action="store_true", help="skip structures whose RM search did not converge")
    p.add_output("--out", kind="run database", type=run_file, help="write into this new database instead of the source run")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="crystals relaxed at once by a batched potential (default 16)")
    add_shared(p, "resume", "threads", "quiet", "cluster", "force")


def run_recheck(args) -> None:
    from respmatch.recheck import recheck

    summary = recheck(
        args.source, args.potential, relax=args.relax, fmax=args.fmax, max_steps=args.max_steps, top=args.top,
        only_converged=args.only_converged, out=args.out, resume=args.resume, workers=args.workers,
        scheduler=args.scheduler, chunk_size=args.chunk_size, batch_size=args.batch_size,
        threads=args.threads or 1, progress=not args.quiet,
    )
    print(
        f"rechecked {summary['rechecked']} of {summary['selected']} selected structures with "
        f"{summary['potential']} in {summary['seconds']:.1f} s ({summary['failed']} failed) -> {summary['out']}"
    )


def export_arguments(p: CommandParser) -> None:
    p.add_input("run", type=database, help="RUN.db")
    p.add_output("--out", kind="structures", required=True, help="FILE.extxyz or FILE.cif")
    p.add_argument("--converged-only", action="store_true")
    add_shared(p, "force")


def run_export(args) -> None:
    from respmatch.store import export

    n = export(args.run, args.out, only_converged=args.converged_only)
    print(f"wrote {n} structures to {args.out}")


def evaluate_arguments(p: CommandParser) -> None:
    from respmatch.evaluate import KINDS

    p.add_input("source", help="RUN.db or a structure file (extxyz, CIF, CDVAE csv)")
    p.add_argument("--kind", required=True, choices=KINDS)
    p.add_input("--reference", help="known structures to match (crystal, carbon)")
    p.add_input("--training", help="training structures, for novelty")
    p.add_output("--json", kind="json", help="write summary, groups and per-structure records here")
    p.add_output("--plot", kind="figure", type=figure_path,
                 help="figure (PNG, SVG, PDF): Ẽ-volume map (carbon) or rates per composition")
    p.add_argument("--rank-by", choices=["pseudo", "physical"], default="pseudo",
                   help="pick each formula's 1 try by Ẽ or by the re-check's physical energy")
    add_shared(p, "force")


def run_evaluate(args) -> None:
    from respmatch.evaluate import JUDGES, evaluate

    evaluation = evaluate(args.source, args.kind, reference=args.reference, training=args.training, rank_by=args.rank_by)
    print(evaluation.table())
    if args.json:
        evaluation.write_json(args.json)
        print(f"wrote {args.json}")
    if args.plot:
        JUDGES[args.kind].plot(evaluation, args.plot)
        print(f"wrote {args.plot}")


def report_arguments(p: CommandParser) -> None:
    p.add_input("source", nargs="+", type=database, help="RUN.db (one run database or several)")
    p.add_output("--out", kind="report", required=True, help="HTML file to write (report.html)")
    p.add_input("--evaluation", action="append", default=[], metavar="EVAL.json",
                help="the judge's verdicts (respmatch evaluate --json) of a run (repeatable, one per run)")
    p.add_argument("--recheck", action="store_true",
                   help="require the physical re-check section (shown anyway when the run holds re-check results)")
    p.add_argument("--structures", type=non_negative_int, default=50, metavar="K",
                   help="embed coordinates of the K lowest-Ẽ structures per composition (default 50)")
    add_shared(p, "force")


def run_report(args) -> None:
    from respmatch.reporting import report

    path = report(args.source, args.out, evaluation=args.evaluation or None, recheck=args.recheck,
                  structures=args.structures)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): open it in a web browser")


def demo_arguments(p: CommandParser) -> None:
    p.add_output("--out", kind="folder", default="respmatch-demo", help="directory for the results")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="override a demo setting, e.g. epochs=20 or tries_per_size=10")
    add_shared(p, "threads", "quiet")


def run_demo(args) -> None:
    from respmatch.config import checked_options
    from respmatch.demo import DemoSettings, run_demo as demo

    settings = DemoSettings(**checked_options(DemoSettings, _key_values(args.option, "--option"), "--option"))
    result = demo(args.out, settings, progress=not args.quiet)
    print(result["table"])
    if result["prediction"]:
        print(f"\n{result['prediction']}")
    timings = result["timings"]
    predicted = f", predict {timings['predict_s']:.0f} s" if "predict_s" in timings else ""
    print(f"\ntrain {timings['train_s']:.0f} s, generate {timings['generate_s']:.0f} s, "
          f"evaluate {timings['evaluate_s']:.0f} s{predicted}, report {timings['report_s']:.0f} s; wrote "
          f"{args.out}/generated.extxyz, evaluation.txt, evaluation.json, carbon_map.png, report.html"
          + (", predict.db, predicted/" if result["prediction"] else ""))


# Options that set a prediction's settings (``PredictSettings`` for crystals, ``MoleculeSettings``
# for molecules); unset ones are None, so that an option of the other kind's funnel is refused.
PREDICT_SETTINGS = ("tries", "keep", "relax", "score", "potential", "screen_steps", "fmax", "max_steps", "symmetry",
                    "n", "max_kicks", "max_tries", "rmsd", "box")


def predict_arguments(p: CommandParser) -> None:
    from respmatch.predict.molecule_settings import MoleculeSettings
    from respmatch.predict.settings import PredictSettings
    from respmatch.predict.shortlist import SCORES

    d, m = PredictSettings(), MoleculeSettings()
    p.add_argument("formulas", nargs="+", metavar="FORMULA",
                   help="one cell's formula, e.g. SrTiO3 or Sr2Ti2O6; a molecule's, e.g. C6H6O (with a molecule model)")
    p.add_input("--model", default="mp20",
                help="a checkpoint or a built-in model (default mp20); a molecule model (qm9) predicts molecules")
    p.add_output("--out", kind="run database", type=run_file, required=True, help="the run database to write (RUN.db)")
    crystals = p.add_argument_group("crystals (a model trained on crystals)")
    crystals.add_argument("--tries", type=positive_int, help=f"M: search tries per formula (default {d.tries})")
    crystals.add_argument("--keep", type=positive_int, help=f"K: distinct structures shortlisted (default {d.keep})")
    crystals.add_argument("--relax", type=positive_int,
                          help=f"of those, relaxed fully: the lowest after the screen (default {d.relax})")
    crystals.add_argument("--score", choices=SCORES, help=f"shortlist pre-score (default {d.score})")
    crystals.add_argument("--screen-steps", type=positive_int,
                          help=f"steps of the short relaxation of every shortlisted structure (default {d.screen_steps})")
    crystals.add_argument("--symmetry", type=fraction, help=f"share of symmetric starts (default {d.symmetry})")
    p.add_output("--cif-dir", kind="folder", metavar="DIR", help="crystals: write DIR/FORMULA/RANK.cif for every ranked structure")
    crystals.add_argument("--physics-batch-size", type=positive_int, help="cells per potential call (default 16)")
    molecules = p.add_argument_group("molecules (a model trained on molecules)")
    molecules.add_argument("--n", type=positive_int, help=f"N: strictly valid molecules per formula (default {m.n})")
    molecules.add_argument("--max-kicks", type=non_negative_int,
                           help=f"kicks of an invalid try before it is replaced (default {m.max_kicks})")
    molecules.add_argument("--max-tries", type=positive_int, help="fresh starts per formula at most (default 20 N)")
    molecules.add_argument("--rmsd", type=positive_float,
                           help=f"Å: geometries of one isomer closer than this are one conformer (default {m.rmsd})")
    molecules.add_argument("--box", type=positive_float, nargs=3, metavar=("X", "Y", "Z"),
                           help=f"Å, the box search starts are drawn in (default {' '.join(map(str, m.box))})")
    p.add_output("--sdf-dir", kind="folder", metavar="DIR",
                 help="molecules: write DIR/FORMULA/RANK.sdf for every ranked isomer, its conformers lowest first")
    p.add_output("--xyz-dir", kind="folder", metavar="DIR", help="molecules: the same as DIR/FORMULA/RANK.xyz")
    p.add_argument("--potential", help=f"{d.potential} or chgnet for crystals, {m.potential} or gfn1-xtb for molecules")
    p.add_argument("--fmax", type=positive_float,
                   help=f"full relaxation threshold, eV/Å (default {d.fmax} crystals, {m.fmax} molecules)")
    p.add_argument("--max-steps", type=positive_int,
                   help=f"full relaxation step cap (default {d.max_steps} crystals, {m.max_steps} molecules)")
    p.add_output("--report", kind="report", metavar="HTML", help="write the HTML report of the run, funnel included")
    p.add_argument("--batch-size", type=positive_int, default=64, help="structures the search relaxes at once")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    add_cluster_options(p)
    add_shared(p, "seed", "resume", "threads", "quiet", "force")


def run_predict(args) -> None:
    from respmatch.predict.molecule_settings import model_kind, settings_for
    from respmatch.predict.pipeline import predict

    given = {name: getattr(args, name) for name in PREDICT_SETTINGS if getattr(args, name) is not None}
    settings = settings_for(model_kind(args.model), {**given, "seed": args.seed})
    result = predict(
        args.formulas, args.model, args.out, settings=settings, resume=args.resume, cif_dir=args.cif_dir,
        sdf_dir=args.sdf_dir, xyz_dir=args.xyz_dir, report=args.report, batch_size=args.batch_size,
        physics_batch_size=args.physics_batch_size, device=args.device, workers=args.workers, scheduler=args.scheduler,
        progress=not args.quiet,
    )
    print(result["table"])
    spent = ", ".join(f"{stage} {t['wall_s']:.0f} s" for stage, t in result["time"].items() if t)
    written = [f"{what} in {folder}" for what, folder in (("CIFs", args.cif_dir), ("SDFs", args.sdf_dir),
                                                           ("XYZs", args.xyz_dir)) if folder]
    print(f"\ntime: {spent}; run {result['out']}" + "".join(f"; {w}" for w in written)
          + (f"; report {args.report}" if args.report else ""))


# name: (help, arguments, run)
COMMANDS = {
    "train": ("train a Response Matching model", train_arguments, run_train),
    "label": ("write one labelled set to extxyz", label_arguments, run_label),
    "generate": ("random structure search on a trained model", generate_arguments, run_generate),
    "recheck": ("judge (and relax) generated structures with a physical potential", recheck_arguments, run_recheck),
    "export": ("write a run's structures to extxyz or CIF", export_arguments, run_export),
    "evaluate": ("judge generated structures and print a table", evaluate_arguments, run_evaluate),
    "report": ("write a self-contained HTML report of a run", report_arguments, run_report),
    "demo": ("train on built-in diamond, generate carbon, evaluate, predict SrTiO3", demo_arguments, run_demo),
    "predict": ("the structure of a formula: search, distinct, shortlist, physics, ranked; "
                "with a molecule model its isomers: valid molecules, GFN2-xTB, ranked", predict_arguments, run_predict),
    "info": ("describe a trained model", info_arguments, run_info),
}


def build_parser(only: str | None = None) -> Parser:
    """The commands; with ``only``, the arguments of that command alone (the others keep their
    name and help; "" builds none), so that parsing one command imports nothing another needs."""
    parser = Parser(prog="respmatch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error, and library warnings")
    parser.set_defaults(resumable=False)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for name, (text, add_arguments, run) in COMMANDS.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        sub.set_defaults(handler=run)
        if only in (None, name):
            add_arguments(sub)
    return parser


def _command_of(argv: list[str]) -> str | None:
    """The command named in ``argv``: its first word that is not an option (only --debug comes before)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"respmatch: warning: {one_line(str(message))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run one command.  The one error path: an expected fault (``errors.describe``) is one line
    on stderr and exit code 2, Ctrl-C is exit code 130 (with the ``--resume`` hint where a run
    continues), anything else is a bug and keeps its traceback; ``--debug`` shows every one, and
    the library warnings that normal runs keep quiet."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_of(argv)
    parser = build_parser(only=command or "")  # "": no command's arguments (respmatch --help)
    try:
        args = parser.parse_args(argv)
        command_parser = parser._subparsers._group_actions[0].choices[args.command]
        command_parser.check_requirements(args)
    except SystemExit as exit:  # --help, or a usage error already printed as one line
        return exit.code
    with warnings.catch_warnings(), _quiet_workers(not args.debug):
        if not args.debug:  # third-party notices carry no action for the user (sevenn's, numpy's)
            warnings.simplefilter("ignore")
        warnings.simplefilter("always", RespmatchWarning)
        warnings.showwarning = _show_warning
        return _run(args, command_parser)


@contextmanager
def _quiet_workers(quiet: bool):
    """The processes a run starts (Dask workers) keep library warnings quiet too."""
    previous = os.environ.get("PYTHONWARNINGS")
    if quiet and previous is None:
        os.environ["PYTHONWARNINGS"] = "ignore"
    try:
        yield
    finally:
        if quiet and previous is None:
            del os.environ["PYTHONWARNINGS"]


def _run(args, command_parser: CommandParser) -> int:
    from respmatch.files import check_files, replacing

    try:
        if getattr(args, "threads", None):
            import torch

            torch.set_num_threads(args.threads)
        inputs, outputs = command_parser.files(args)
        with replacing(path for _, path, _ in outputs if getattr(args, "force", False)):
            check_files(inputs, outputs)
            args.handler(args)
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
        print(f"respmatch: error: {one_line(message)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
