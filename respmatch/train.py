"""Fit the denoiser to response labels drawn afresh every epoch.

Adam (AMSGrad) with gradient clipping, an exponential moving average (EMA) of the weights that is
what gets validated and saved, reduce-on-plateau on the validation loss, and early stopping.
Validation uses a fixed labelled set (held-out structures when there are enough, otherwise fresh
noise on the training structures).  After every epoch (and, with ``state_every``, within one) the
full training state is written next to the model, so an interrupted run continues with
``resume=True`` where its state was written; ``save_best`` writes the model of a state's best
epoch so far, so that a run still in progress can ship it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from ase import Atoms
from scipy.optimize import nnls
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from respmatch.config import checked_options, parameter_differences
from respmatch.errors import RespmatchError
from respmatch.files import atomic_save, check_output, temporary_path
from respmatch.io import is_periodic
from respmatch.labels import (
    LabelConfig,
    LabelledStructures,
    draw_labels,
    label_preset,
    with_pair_repulsion,
)
from respmatch.model import Denoiser, ModelConfig, save_model
from respmatch.neighbors import build_graph, neighbor_pairs
from respmatch.sanity import check_epoch, check_learnt, check_structures, data_checksum
from respmatch.search.symmetric import space_group_counts
from respmatch.structures import Structures

VALIDATION_SEED_OFFSET = 1_000_003
# Training options a resumed run may change (it may be given more epochs or more patience).
TRAIN_MAY_CHANGE = frozenset({"train.epochs", "train.early_stop_patience"})


@dataclass
class TrainConfig:
    """Optimisation settings.

    The paper used batches of 2, plateau factor 0.8 with patience 10 and 400 epochs.  Fresh labels
    every epoch and standardised features let a faster schedule reach the same validation error:
    on the one-diamond task these defaults match a 50-epoch batch-2 run in about 32 epochs
    (benchmarks/train_speed.py).
    """

    epochs: int = 400  # an upper bound: early stopping usually ends training well before
    batch_size: int = 4  # labelled copies per optimiser step
    learning_rate: float = 1e-2
    ema_decay: float = 0.99
    grad_clip: float = 10.0
    plateau_factor: float = 0.6
    plateau_patience: int = 2
    early_stop_patience: int = 8  # epochs without a better validation loss
    min_improvement: float = 2e-3  # relative change that counts as better
    force_weight: float = 1.0
    stress_weight: float = 1.0
    energy_weight: float = 0.01  # per-atom energy, small: keeps Ẽ near 0 at the training data
    # How copies at different noise levels k share the force and energy loss.  "uniform" (the
    # paper): every copy alike, so the largest levels dominate (their labels scale as k).
    # "inverse-variance": weight 1/max(k,1)², so each level contributes alike relative to its
    # label variance, as denoising score matching weights its noise scales.
    noise_weighting: str = "uniform"
    val_fraction: float = 0.1  # of structures, when there are at least 10
    seed: int = 0


@dataclass
class TrainResult:
    model: Denoiser
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    initial: dict = field(default_factory=dict)  # validation metrics before training


def warmup_ema(decay: float):
    """EMA whose decay grows as (1+n)/(10+n) up to ``decay``: early, poor weights fade quickly."""

    def average(averaged, current, n_averaged):
        rate = min(decay, (1 + float(n_averaged)) / (10 + float(n_averaged)))
        return rate * averaged + (1 - rate) * current

    return average


def preset_for(structures: list[Atoms]) -> str:
    """'crystal' if every structure is periodic, 'molecule' if none is."""
    kinds = {is_periodic(a) for a in structures}
    if len(kinds) > 1:
        raise RespmatchError("training data mixes molecules and crystals: choose --preset explicitly")
    return "crystal" if kinds == {True} else "molecule"


def fit_element_volumes(structures: list[Atoms], elements: tuple[int, ...]) -> np.ndarray:
    """Per-element volumes (Å³/atom): least squares of cell volume against element counts."""
    crystals = [a for a in structures if is_periodic(a)]
    if not crystals:
        return np.zeros(len(elements))
    counts = np.array([[np.sum(a.numbers == z) for z in elements] for a in crystals], float)
    volumes = np.array([a.get_volume() for a in crystals])
    # Non-negative least squares: plain lstsq on elements that always occur in a fixed ratio
    # can give one of them a negative volume, which would break the sizing of search cells.
    return nnls(counts, volumes)[0]


def mean_neighbors(structures: list[Atoms], cutoff: float) -> float:
    counts = [
        len(neighbor_pairs(a.positions, a.cell.array, is_periodic(a), cutoff)[0]) / len(a)
        for a in structures
    ]
    return max(float(np.mean(counts)), 1.0)


def split_structures(structures: list[Atoms], config: TrainConfig):
    """Hold out a random fraction of structures for validation (none if fewer than 10)."""
    if len(structures) < 10 or config.val_fraction <= 0:
        return structures, structures
    order = np.random.default_rng(config.seed).permutation(len(structures))
    n_val = max(1, int(round(config.val_fraction * len(structures))))
    return [structures[i] for i in order[n_val:]], [structures[i] for i in order[:n_val]]


NOISE_WEIGHTINGS = ("uniform", "inverse-variance")


def copy_weights(noise_level: torch.Tensor, noise_weighting: str) -> torch.Tensor:
    """Loss weight of each labelled copy, (B,), from its noise level."""
    if noise_weighting == "uniform":
        return torch.ones_like(noise_level)
    if noise_weighting == "inverse-variance":
        return noise_level.clamp(min=1.0) ** -2
    raise RespmatchError(f"unknown noise_weighting {noise_weighting!r} (choose from {NOISE_WEIGHTINGS})")


def loss_terms(
    model: Denoiser, batch: LabelledStructures, create_graph: bool, noise_weighting="uniform"
) -> dict:
    """Mean squared errors of forces, stress (periodic copies) and energy per atom, forces and
    energy weighted per copy by ``noise_weighting``; ``forces_plain`` is the unweighted force MSE."""
    periodic = batch.periodic
    out = model(
        batch,
        build_graph(batch, model.config.cutoff),
        forces=True,
        stress=bool(periodic.any()),
        create_graph=create_graph,
    )
    weight = copy_weights(batch.noise_level, noise_weighting)
    atom_weight = weight[batch.system]
    force_error = ((out["forces"] - batch.forces) ** 2).mean(-1)
    terms = {
        "forces": (atom_weight * force_error).sum() / atom_weight.sum(),
        "forces_plain": force_error.mean(),
    }
    if periodic.any():
        terms["stress"] = ((out["stress"] - batch.stress)[periodic] ** 2).mean()
    per_atom = (out["energy"] - batch.energy) / batch.n_atoms
    terms["energy"] = (weight * per_atom**2).sum() / weight.sum()
    return terms


def weighted(terms: dict, config: TrainConfig) -> torch.Tensor:
    weights = {
        "forces": config.force_weight,
        "stress": config.stress_weight,
        "energy": config.energy_weight,
    }
    return sum(weights[name] * terms[name] for name in weights if name in terms)


def evaluate(model: Denoiser, labelled: LabelledStructures, config: TrainConfig) -> dict:
    """Validation loss and RMSEs, accumulated over batches of copies."""
    sums, n_batches = {}, 0
    for index in torch.arange(labelled.n_structures).split(max(config.batch_size, 32)):
        terms = loss_terms(
            model, labelled.select(index), create_graph=False, noise_weighting=config.noise_weighting
        )
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
        n_batches += 1
    means = {name: value / n_batches for name, value in sums.items()}
    result = {"loss": float(weighted(means, config))}
    # Reported RMSEs are plain (unweighted), comparable whatever the loss weighting.
    means["forces"] = means.pop("forces_plain")
    result.update({f"{name}_rmse": math.sqrt(value) for name, value in means.items()})
    return result


def run_identity(structures, preset, label_config, model_config, config) -> dict:
    """What a resumed run must share with the state it continues: the data (by checksum) and
    every label, model and training option, as one flat dict."""
    return {
        "data_sha256": data_checksum(structures),
        "preset": preset,
        **{f"label.{k}": v for k, v in label_config.to_dict().items()},
        **{f"model.{k}": v for k, v in model_config.to_dict().items()},
        **{f"train.{k}": v for k, v in asdict(config).items()},
    }


def train(
    structures: list[Atoms],
    out: str | os.PathLike,
    *,
    preset: str | None = None,
    label_config: LabelConfig | None = None,
    model_options: dict | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    dtype=torch.float32,
    state_every: float | None = None,
) -> TrainResult:
    """Train a Response Matching model on equilibrium ``structures`` and save it to ``out``.

    ``state_every`` (seconds): also write the training state within an epoch this often, so that
    a run whose epochs take long (all of QM9 on one core) loses at most that much when stopped.
    A resumed epoch redraws the same labels and order and skips the steps already taken.
    """
    config = config or TrainConfig()
    copy_weights(torch.ones(1), config.noise_weighting)  # refuse an unknown weighting up front
    if config.epochs < 1 or config.batch_size < 1:
        raise RespmatchError(
            f"epochs ({config.epochs}) and batch_size ({config.batch_size}) must be at least 1"
        )
    out = check_output(out, kind="model")
    # Early float32 gradients underflow into denormals, which the CPU handles ~10x slower:
    # flushing them to zero halved the first epochs in the profile and changes no result.
    torch.set_flush_denormal(True)
    if not structures:
        raise RespmatchError("no training structures")
    preset = preset or preset_for(structures)
    label_config = with_pair_repulsion(label_config or label_preset(preset), structures)
    state_path = out.with_name(out.name + ".state")
    for path in (out, state_path):  # left by a run killed while it wrote them
        temporary_path(path).unlink(missing_ok=True)

    train_set, val_set = split_structures(structures, config)
    elements = tuple(sorted({int(z) for a in structures for z in a.numbers}))
    options = {"elements": elements, **checked_options(ModelConfig, model_options or {}, "--model")}
    model_config = ModelConfig(**options)
    check_structures(structures, model_config.cutoff)
    if "avg_neighbors" not in options:
        model_config = replace(model_config, avg_neighbors=mean_neighbors(train_set, model_config.cutoff))
    torch.manual_seed(config.seed)
    model = Denoiser(model_config).to(dtype)
    model.element_volumes.copy_(torch.as_tensor(fit_element_volumes(structures, elements)))
    train_structures = Structures.from_atoms(train_set, dtype=dtype)
    sample = draw_labels(train_structures, label_config, torch.Generator().manual_seed(config.seed))
    model.standardize_features(sample.select(torch.randperm(sample.n_structures)[:64]))
    ema = AveragedModel(model, avg_fn=warmup_ema(config.ema_decay))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate, amsgrad=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer,
        factor=config.plateau_factor,
        patience=config.plateau_patience,
        threshold=config.min_improvement,  # the same notion of "better" as early stopping
    )
    history, best, start_epoch = [], {"loss": math.inf, "epoch": -1}, 0
    initial, best_weights = {}, None
    identity = run_identity(structures, preset, label_config, model.config, config)
    partial = {}  # how far the epoch after the state's last finished one had got
    if resume and state_path.exists():
        state = load_state(state_path)
        if "identity" not in state:
            raise RespmatchError(
                f"{state_path}: written by an older respmatch that did not record its data and "
                "options; train afresh without --resume"
            )
        details = parameter_differences(state["identity"], identity, TRAIN_MAY_CHANGE)
        if details:
            raise RespmatchError(
                f"{state_path}: cannot resume, this state belongs to another run: {details}"
            )
        try:
            model.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except Exception as error:  # corrupt file, or a run with other model options
            raise RespmatchError(
                f"{state_path}: cannot resume from this training state "
                f"(was it written with other options?): {error}"
            ) from error
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        initial, best_weights = state["initial"], state["best_weights"]
        partial = state.get("partial") or {}

    validation = draw_labels(
        Structures.from_atoms(val_set, dtype=dtype),
        label_config,
        torch.Generator().manual_seed(config.seed + VALIDATION_SEED_OFFSET),
    )
    if not initial:
        initial = evaluate(model.eval(), validation, config)
    meta = {
        "preset": preset,
        "train_config": asdict(config),
        "n_structures": len(structures),
        "n_train": len(train_set),
        "n_val": len(val_set) if val_set is not train_set else 0,
        "initial": initial,
        # The prior of symmetric starts (``--space-groups prior``): groups of the training crystals.
        "space_groups": space_group_counts(structures) if preset == "crystal" else {},
    }

    def save_state(finished_epoch: int, partial: dict) -> None:
        atomic_save(
            {
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "best": best,
                "initial": initial,
                "best_weights": best_weights,
                "identity": identity,
                "epoch": finished_epoch,
                "partial": partial,
                # what save_best needs to write the best model without the training data
                "meta": meta,
                "label_config": label_config.to_dict(),
                "model_config": model.config.to_dict(),
            },
            state_path,
        )
    bar = tqdm(
        range(start_epoch, config.epochs),
        initial=start_epoch,
        total=config.epochs,
        desc="train",
        disable=not progress,
    )
    for epoch in bar:
        if epoch - best["epoch"] > config.early_stop_patience:
            break
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        labelled = draw_labels(train_structures, label_config, generator)
        order = torch.randperm(labelled.n_structures, generator=generator)
        model.train()
        done = partial if partial.get("epoch") == epoch else {}
        train_loss, n_steps, earlier = done.get("train_loss", 0.0), done.get("steps", 0), done.get("seconds", 0.0)
        last_saved = time.perf_counter()
        for index in order.split(config.batch_size)[n_steps:]:
            batch = labelled.select(index)
            terms = loss_terms(model, batch, create_graph=True, noise_weighting=config.noise_weighting)
            loss = weighted(terms, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            ema.update_parameters(model)
            train_loss += float(loss.detach())
            n_steps += 1
            if state_every is not None and time.perf_counter() - last_saved >= state_every:
                seconds = earlier + time.perf_counter() - started
                save_state(epoch - 1, {"epoch": epoch, "steps": n_steps, "train_loss": train_loss, "seconds": seconds})
                last_saved = time.perf_counter()
        ema.module.eval()
        metrics = evaluate(ema.module, validation, config)
        check_epoch(epoch, train_loss, metrics["loss"], initial)
        scheduler.step(metrics["loss"])
        record = {
            "epoch": epoch,
            "train_loss": train_loss / n_steps,
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": earlier + time.perf_counter() - started,
            **{f"val_{k}": v for k, v in metrics.items()},
        }
        history.append(record)
        if metrics["loss"] < best["loss"] * (1 - config.min_improvement):
            best = {"loss": metrics["loss"], "epoch": epoch, **record}
            best_weights = {k: v.detach().clone() for k, v in ema.module.state_dict().items()}
        save_state(epoch, {})
        bar.set_postfix(
            loss=f"{record['train_loss']:.4f}",
            val_f=f"{metrics['forces_rmse']:.4f}",
            lr=f"{record['lr']:.1e}",
        )
    bar.close()
    check_learnt(history, best, initial, config.min_improvement)
    final = ema.module
    final.load_state_dict(best_weights)
    # The model file is written once, at the end, only for a model that learnt something: a
    # failed or interrupted run leaves an earlier file at ``out`` as it was.
    save_model(
        out,
        final,
        label_config=label_config.to_dict(),
        training={**meta, "best": best, "history": history},
    )
    return TrainResult(model=final.eval(), history=history, best=best, initial=initial)


def load_state(state_path) -> dict:
    """The training state ``train`` writes next to its model (``MODEL.state``)."""
    try:
        return torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RespmatchError(f"{state_path}: unreadable training state: {error}") from error


def save_best(state_path, out) -> dict:
    """Write to ``out`` the model of a training state's best epoch so far, with the training
    record up to that state (as ``train`` writes at its end); return that record."""
    state = load_state(state_path)
    if "meta" not in state:
        raise RespmatchError(f"{state_path}: written by an older respmatch; resume it once to save its best model")
    check_learnt(state["history"], state["best"], state["initial"], state["meta"]["train_config"]["min_improvement"])
    model = Denoiser(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["best_weights"])
    training = {**state["meta"], "best": state["best"], "history": state["history"]}
    save_model(out, model, label_config=state["label_config"], training=training)
    return training
