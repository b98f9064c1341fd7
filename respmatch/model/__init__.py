"""The denoiser potential and its checkpoint format."""

from respmatch.model.checkpoint import load_checkpoint, load_model, save_model
from respmatch.model.denoiser import Denoiser, ModelConfig

__all__ = ["Denoiser", "ModelConfig", "load_checkpoint", "load_model", "save_model"]
