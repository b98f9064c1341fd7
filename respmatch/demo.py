"""``respmatch demo``: the one-shot carbon experiment end to end, on a diamond built in code, then
a small structure prediction on a shipped model.

Train on one diamond cell, relax random carbon cells of 2–12 atoms at fixed volumes on the
learned pseudo-energy, judge what came out, and write the table, the structures, the map of
Ẽ against volume and the HTML report.  Then ``respmatch predict`` on one formula with the shipped
``mp20`` model (SrTiO3: the cubic perovskite should come first), its funnel in the same report.
Sized to finish in a few minutes on two CPU cores.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ase.build import bulk
from ase.io import write

from respmatch.evaluate.carbon import evaluate_carbon
from respmatch.evaluate.plots import plot_carbon_map
from respmatch.errors import RespmatchError
from respmatch.files import atomic_path, atomic_write_bytes, check_output_folder, temporary_path
from respmatch.model import model_checksum
from respmatch.predict.pipeline import predict
from respmatch.predict.settings import PredictSettings
from respmatch.reporting import from_structures, report
from respmatch.search.generate import search_compositions
from respmatch.search.spec import SEARCH_PRESETS, search_preset
from respmatch.train import TrainConfig, train

# The paper's single datum is a diamond cell with 1.42 Å bonds (4.41 Å³/atom); the same
# compressed diamond, as a cubic cell of 8 atoms: a = 4 · 1.42 / √3.
DIAMOND_LATTICE = 3.2795


@dataclass(frozen=True)
class DemoSettings:
    epochs: int = 60
    cell_sizes: tuple[int, ...] = (2, 4, 6, 8, 12)  # atoms per cell, as the paper's search
    tries_per_size: int = 40
    volume_per_atom: tuple[float, float] = (3.8, 5.6)  # Å³/atom, swept evenly per cell size
    preset: str = "fixed-volume-fast"  # the paper's fine stage after a coarse one
    max_steps: int | None = None  # cap on every stage's steps (quick runs)
    seed: int = 0
    batch_size: int = 100
    predict_formula: str | None = "SrTiO3"  # predicted with the shipped mp20 model; None: no prediction
    predict_tries: int = 20

    def __post_init__(self):
        """Settings that cannot make a demo are refused here, before any folder or file exists."""

        def whole(value, least=1):
            return isinstance(value, int) and not isinstance(value, bool) and value >= least

        volumes = self.volume_per_atom
        wanted = {
            "epochs": (whole(self.epochs), "a whole number of at least 1"),
            "cell_sizes": (bool(self.cell_sizes) and all(map(whole, self.cell_sizes)), "atoms per cell, e.g. (2, 4)"),
            "tries_per_size": (whole(self.tries_per_size), "a whole number of at least 1"),
            "volume_per_atom": (
                len(volumes) == 2 and all(isinstance(v, (int, float)) and 0 < v < math.inf for v in volumes)
                and volumes[0] <= volumes[1],
                "a range (low, high) of Å³ per atom, e.g. (3.8, 5.6)",
            ),
            "preset": (self.preset in SEARCH_PRESETS, f"one of {', '.join(SEARCH_PRESETS)}"),
            "max_steps": (self.max_steps is None or whole(self.max_steps), "None or a whole number of at least 1"),
            "batch_size": (whole(self.batch_size), "a whole number of at least 1"),
            "predict_formula": (self.predict_formula is None or isinstance(self.predict_formula, str),
                                "a formula such as SrTiO3, or None"),
            "predict_tries": (whole(self.predict_tries, 5), "a whole number of at least 5"),
        }
        for name, (fits, expected) in wanted.items():
            if not fits:
                raise RespmatchError(f"demo option {name}={getattr(self, name)!r}: expected {expected}")


def run_demo(out_dir: str | Path, settings: DemoSettings = DemoSettings(), progress: bool = True) -> dict:
    """Train, generate, evaluate; return the timings and the evaluation summary.

    The folder is checked before any work.  A demo that fails or is interrupted removes the
    files it created (and the folder, if it made it); files of an earlier demo are each replaced
    only by a whole new one.
    """
    out_dir = check_output_folder(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(exist_ok=True)
    earlier = set(out_dir.iterdir())
    try:
        return _run(out_dir, settings, progress)
    except BaseException:
        for path in set(out_dir.iterdir()) - earlier:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        if created:
            out_dir.rmdir()
        raise


def _run(out_dir: Path, settings: DemoSettings, progress: bool) -> dict:
    timings = {}

    started = time.perf_counter()
    diamond = bulk("C", "diamond", a=DIAMOND_LATTICE, cubic=True)
    model_path = out_dir / "diamond.pt"
    config = TrainConfig(epochs=settings.epochs, seed=settings.seed)
    result = train([diamond], model_path, preset="crystal", config=config, progress=progress)
    timings["train_s"] = time.perf_counter() - started

    started = time.perf_counter()
    structures_path = out_dir / "generated.extxyz"
    structures = []
    stages = search_preset(settings.preset).stages
    caps = {f"stage{k}.max_steps": settings.max_steps for k in range(len(stages))} if settings.max_steps else {}
    search = search_compositions(
        result,  # the trained model goes straight in
        {f"C{n}": settings.tries_per_size for n in settings.cell_sizes},
        preset=settings.preset,
        volume_per_atom=settings.volume_per_atom,
        seed=settings.seed,
        batch_size=settings.batch_size,
        options=caps,
        progress=progress,
    )
    with atomic_path(structures_path) as temporary:
        temporary.write_bytes(b"")  # empty, even where a killed demo left one
        for atoms in search:
            write(temporary, atoms, format="extxyz", append=True)  # as they finish, renamed at the end
            structures.append(atoms)
    timings["generate_s"] = time.perf_counter() - started

    started = time.perf_counter()
    evaluation = evaluate_carbon(structures)
    table = evaluation.table()
    atomic_write_bytes(out_dir / "evaluation.txt", (table + "\n").encode())
    evaluation.write_json(out_dir / "evaluation.json")
    plot_carbon_map(evaluation, out_dir / "carbon_map.png")
    timings["evaluate_s"] = time.perf_counter() - started

    prediction = None
    if settings.predict_formula:
        started = time.perf_counter()
        prediction = predict_step(out_dir, settings, progress)
        timings["predict_s"] = time.perf_counter() - started

    started = time.perf_counter()
    parameters = {
        "preset": settings.preset,
        "search": asdict(search_preset(settings.preset, **caps)),
        "seed": settings.seed,
        "n": len(structures),
        "volume_per_atom": settings.volume_per_atom,
        "model": str(model_path),
        "model_sha256": model_checksum(result.model),
    }
    run = from_structures(structures, "demo", parameters, seconds=timings["generate_s"])
    report([run, out_dir / "predict.db"] if prediction else run, out_dir / "report.html", evaluation=evaluation)
    timings["report_s"] = time.perf_counter() - started
    return {
        "out_dir": str(out_dir),
        "validation_force_rmse": result.best.get("val_forces_rmse"),
        "table": table,
        "timings": timings,
        "summary": evaluation.summary,
        "prediction": prediction and prediction["table"],
    }


def predict_step(out_dir: Path, settings: DemoSettings, progress: bool) -> dict:
    """The small funnel: written under a temporary name, renamed over an earlier demo's run when whole."""
    path = out_dir / "predict.db"
    temporary = temporary_path(path)
    temporary.unlink(missing_ok=True)  # what a killed demo left
    funnel = PredictSettings(tries=settings.predict_tries, keep=4, relax=2, screen_steps=20, seed=settings.seed)
    result = predict(settings.predict_formula, "mp20", temporary, settings=funnel,
                     cif_dir=out_dir / "predicted", progress=progress)
    os.replace(temporary, path)
    return result
