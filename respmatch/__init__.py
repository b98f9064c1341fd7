"""respmatch: generate molecules and crystals with Response Matching.

Train a strictly local potential on the restoring response of perturbed equilibrium structures,
then use it as an ASE calculator (and, for generation, relax random structures on it).
"""

from respmatch.calculator import ResponseMatchingCalculator, calculator
from respmatch.io import StructureError, read_structures
from respmatch.labels import LabelConfig, draw_labels, export_labels, label_preset
from respmatch.model import Denoiser, ModelConfig, load_model, model_checksum
from respmatch.reporting import report
from respmatch.search.generate import generate
from respmatch.predict.pipeline import predict
from respmatch.predict.settings import PredictSettings
from respmatch.search.spec import SearchSpec, search_preset
from respmatch.potential import Potential
from respmatch.recheck import recheck
from respmatch.structures import Structures
from respmatch.train import TrainConfig, train

__version__ = "0.1.0"

__all__ = [
    "Denoiser",
    "LabelConfig",
    "ModelConfig",
    "Potential",
    "PredictSettings",
    "ResponseMatchingCalculator",
    "StructureError",
    "Structures",
    "TrainConfig",
    "calculator",
    "draw_labels",
    "export_labels",
    "generate",
    "label_preset",
    "load_model",
    "model_checksum",
    "predict",
    "read_structures",
    "SearchSpec",
    "report",
    "recheck",
    "search_preset",
    "train",
]
