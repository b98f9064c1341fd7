"""A trained respmatch model as an ASE Calculator (energy, forces, stress in ASE units)."""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from respmatch.errors import RespmatchError
from respmatch.model import Denoiser, load_model
from respmatch.structures import Structures


class ResponseMatchingCalculator(Calculator):
    """Pseudo-energy Ẽ of a Response Matching model.  Stress only for fully periodic cells."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model: Denoiser | str, device="cpu", dtype=torch.float64, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, Denoiser):
            model = load_model(model, device=device, dtype=dtype)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        if atoms.pbc.any() and not atoms.pbc.all():
            raise RespmatchError("partially periodic structures are not supported")
        periodic = bool(atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a fully periodic cell")
        structures = Structures.from_atoms([atoms], dtype=self.dtype, device=self.device)
        out = self.model(structures, forces=True, stress=periodic)
        energy = float(out["energy"][0].detach())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": out["atomic_energies"].detach().cpu().double().numpy(),
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if periodic:
            s = out["stress"][0].detach().cpu().double().numpy()
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])


def calculator(model_path, device="cpu", dtype=torch.float64) -> ResponseMatchingCalculator:
    """``respmatch.calculator("MODEL.pt")``: an ASE calculator for a trained model."""
    return ResponseMatchingCalculator(model_path, device=device, dtype=dtype)
