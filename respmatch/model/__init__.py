"""The denoiser potential and its checkpoint format."""

from respmatch.model.checkpoint import as_model, load_checkpoint, load_model, model_checksum, save_model
from respmatch.model.denoiser import Denoiser, ModelConfig

__all__ = ["Denoiser", "ModelConfig", "as_model", "load_checkpoint", "load_model", "model_checksum", "save_model"]
