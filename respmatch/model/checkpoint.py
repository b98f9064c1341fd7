"""Checkpoint format: one dict of plain Python values and tensors, so that
``torch.load(path, weights_only=True)`` reads it without trusting pickled code."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from respmatch.builtin import BUILTIN_MODELS, model_path
from respmatch.errors import RespmatchError
from respmatch.files import atomic_save
from respmatch.model.denoiser import Denoiser, ModelConfig

FORMAT = "respmatch-model"
VERSION = 1


def checkpoint_of(model: Denoiser, *, label_config: dict | None = None, training: dict | None = None) -> dict:
    """The checkpoint dict: weights, full configuration, elements and per-element volumes."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model_config": model.config.to_dict(),
        "label_config": label_config or {},
        "elements": list(model.config.elements),
        "element_volumes": {
            int(z): float(v) for z, v in zip(model.config.elements, model.element_volumes.tolist())
        },
        "state_dict": {k: v.detach().cpu().float() for k, v in model.state_dict().items()},
        "training": training or {},
    }


def save_model(path, model: Denoiser, *, label_config: dict | None = None, training: dict | None = None):
    atomic_save(checkpoint_of(model, label_config=label_config, training=training), path)


def describe_model(model) -> dict:
    """What ``respmatch info`` shows of a model file or built-in model: where it is, what it was
    trained on and for how long, its configuration and its best validation figures."""
    checkpoint = load_checkpoint(model)
    training = checkpoint.get("training", {})
    history = training.get("history", [])
    return {
        "model": str(model_path(model)),
        "built_in": BUILTIN_MODELS.get(str(model)),
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


def load_checkpoint(path) -> dict:
    """The checkpoint of a file or of a built-in model's name (``respmatch.builtin``); any file
    that is not one is refused with the reason, and nothing pickled is ever run."""
    path = Path(model_path(path))
    if path.is_dir():
        raise RespmatchError(f"{path}: is a folder, not a model file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives
        raise RespmatchError(f"{path}: not a respmatch model: {_what_file(path)}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise RespmatchError(
            f"{path}: not a respmatch model: it holds pickled Python objects, not plain values and "
            "tensors, and respmatch never runs code from a file"
        ) from error
    except Exception as error:  # torch raises several types for corrupt or foreign files
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RespmatchError(f"{path}: not a readable respmatch model ({reason})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise RespmatchError(f"{path}: not a respmatch model (a torch file of some other program)")
    return checkpoint


def _what_file(path: Path) -> str:
    head = path.read_bytes()[:512]
    if not head:
        return "the file is empty"
    if head[:1] == b"\x80":
        return "an old-style pickle, which respmatch never loads (it could run code)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "an unknown binary file"
    return "a text file"


def torch_device(name: str) -> torch.device:
    """The device ``name`` names, refused with one line if it is unknown or not present."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise RespmatchError(f"--device {name}: unknown device; use cpu or cuda") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RespmatchError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RespmatchError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices")
    elif device.type != "cpu":
        raise RespmatchError(f"--device {name}: respmatch runs on cpu or cuda")
    return device


def model_from_checkpoint(checkpoint: dict, device="cpu", dtype=torch.float32) -> Denoiser:
    model = Denoiser(ModelConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.to(device=device, dtype=dtype).eval()


def load_model(path, device="cpu", dtype=torch.float32) -> Denoiser:
    """The trained denoiser, in eval mode; ``model.checkpoint`` keeps the rest of the file."""
    torch_device(device)  # an unknown or absent device fails before the file is read
    checkpoint = load_checkpoint(path)
    model = model_from_checkpoint(checkpoint, device, dtype)
    model.checkpoint = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    return model


def as_model(source, device="cpu", dtype=torch.float32) -> Denoiser:
    """A model from a checkpoint path, a ``Denoiser``, or what ``respmatch.train()`` returns."""
    if isinstance(source, (str, os.PathLike)):
        return load_model(source, device, dtype)
    model = getattr(source, "model", source)  # a TrainResult carries its model
    if not isinstance(model, Denoiser):
        raise TypeError(f"expected a model, a TrainResult or a checkpoint path, got {type(source).__name__}")
    return model


def model_checksum(model: Denoiser) -> str:
    """sha256 of what the model computes (configuration and weights as a checkpoint stores them).

    The same for a model in memory, its checkpoint file and that file loaded in another process,
    in any dtype, so a run records one checksum however its model was given or shipped.
    """
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def model_to_bytes(model: Denoiser) -> bytes:
    """The model as checkpoint bytes, to ship to another process (a Dask worker)."""
    buffer = io.BytesIO()
    torch.save(checkpoint_of(model), buffer)
    return buffer.getvalue()


def model_from_bytes(data: bytes, device="cpu", dtype=torch.float32) -> Denoiser:
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return model_from_checkpoint(checkpoint, device, dtype)
