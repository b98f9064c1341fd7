"""Checkpoint format: one dict of plain Python values and tensors, so that
``torch.load(path, weights_only=True)`` reads it without trusting pickled code."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from respmatch.model.denoiser import Denoiser, ModelConfig

FORMAT = "respmatch-model"
VERSION = 1


def atomic_save(obj, path) -> None:
    """torch.save to a temporary file, then rename: an interrupted save leaves the old file."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def save_model(path, model: Denoiser, *, label_config: dict | None = None, training: dict | None = None):
    """The checkpoint: weights, full configuration, elements and per-element volumes."""
    checkpoint = {
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
    atomic_save(checkpoint, path)


def load_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path}: not a readable respmatch checkpoint ({error})") from error
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path}: not a respmatch model checkpoint")
    return checkpoint


def load_model(path, device="cpu", dtype=torch.float32) -> Denoiser:
    """The trained denoiser, in eval mode; ``model.checkpoint`` keeps the rest of the file."""
    checkpoint = load_checkpoint(path)
    model = Denoiser(ModelConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["state_dict"])
    model.checkpoint = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    model.checkpoint["sha256"] = file_checksum(path)
    return model.to(device=device, dtype=dtype).eval()


def file_checksum(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
