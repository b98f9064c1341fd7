"""respmatch: generate molecules and crystals with Response Matching.

Train a strictly local potential on the restoring response of perturbed equilibrium structures,
then use it as an ASE calculator (and, for generation, relax random structures on it).

The names below are loaded when first used (module ``__getattr__``, PEP 562): importing the
package, or any one command, does not load torch, pymatgen, RDKit, plotly or Dask for the others.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "ResponseMatchingCalculator": "respmatch.calculator",
    "calculator": "respmatch.calculator",
    "StructureError": "respmatch.io",
    "read_structures": "respmatch.io",
    "LabelConfig": "respmatch.labels",
    "draw_labels": "respmatch.labels",
    "export_labels": "respmatch.labels",
    "label_preset": "respmatch.labels",
    "Denoiser": "respmatch.model",
    "ModelConfig": "respmatch.model",
    "load_model": "respmatch.model",
    "model_checksum": "respmatch.model",
    "report": "respmatch.reporting",
    "predict": "respmatch.predict.pipeline",
    "PredictSettings": "respmatch.predict.settings",
    "MoleculeSettings": "respmatch.predict.molecule_settings",
    "generate": "respmatch.search.generate",
    "SearchSpec": "respmatch.search.spec",
    "search_preset": "respmatch.search.spec",
    "Potential": "respmatch.potential",
    "recheck": "respmatch.recheck",
    "Structures": "respmatch.structures",
    "TrainConfig": "respmatch.train",
    "train": "respmatch.train",
}

__all__ = sorted(_EXPORTS)
# Names of both a submodule and the function it defines (``calculator``, ``recheck``, ``train``):
# ``respmatch.train(...)`` is the function, whichever is imported first.
# ``predict`` is a subpackage whose function lives in one of its modules.
_SHADOWED = {name for name, module in _EXPORTS.items() if f"{module}.".startswith(f"{__name__}.{name}.")}


class _Package(types.ModuleType):
    def __setattr__(self, name, value):
        # The import system binds a submodule to its parent package once it has run; bind the
        # function instead, as the eager imports of this package used to.
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(importlib.import_module(_EXPORTS[name]), name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'respmatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
