"""torch-sim 0.3.0's batched Frechet-cell FIRE with a respmatch model, against ASE's FIRE.

The evaluation behind respmatch's own relaxer (respmatch/search/relax.py).  torch-sim is not a
dependency: run this in a separate environment, e.g.

    python3 -m venv /tmp/tsvenv && /tmp/tsvenv/bin/pip install torch==2.13.0 \
        && /tmp/tsvenv/bin/pip install torch-sim-atomistic==0.3.0 && /tmp/tsvenv/bin/pip install -e .
    /tmp/tsvenv/bin/python benchmarks/compare_torch_sim.py --model benchmarks/out/diamond.pt

Each structure runs alone in torch-sim until its own convergence test passes (as ASE stops), so
step counts and end points compare directly.
"""
import numpy as np, torch
import torch_sim as ts
from torch_sim.models.interface import ModelInterface
from ase.filters import FrechetCellFilter
from ase.optimize import FIRE
import respmatch
from respmatch.structures import Structures
from respmatch.search.starts import crystal_start, start_rng

class RM(ModelInterface):
    def __init__(self, model):
        super().__init__()
        self.model = model; self._compute_stress = True; self._compute_forces = True
        self._device = torch.device("cpu"); self._dtype = torch.float64
    def forward(self, state, **kw):
        n = torch.bincount(state.system_idx)
        s = Structures(positions=state.positions, numbers=state.atomic_numbers, cell=state.row_vector_cell,
                       periodic=torch.ones(len(n), dtype=torch.bool), n_atoms=n)
        out = self.model(s, forces=True, stress=True)
        return {"energy": out["energy"].detach(), "forces": out["forces"], "stress": out["stress"]}

import argparse
parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", default="benchmarks/out/diamond.pt")
path = parser.parse_args().model
model = respmatch.load_model(path, dtype=torch.float64)
starts = [crystal_start([6]*8, 40.0, start_rng(0, i)) for i in range(6)]
for cv in (True, False):
    init, update = ts.optimizers.frechet_cell_fire(RM(model), constant_volume=cv, max_step=0.01 if cv else 0.2, md_flavor="ase_fire")
    conv = ts.generate_force_convergence_fn(5e-3, include_cell_forces=True)
    for i, a in enumerate(starts):
        state = init(ts.initialize_state([a], device=torch.device("cpu"), dtype=torch.float64))
        steps = 0
        while not bool(conv(state).all()) and steps < 300:  # one structure: stop exactly as ASE does
            state = update(state); steps += 1
        b = a.copy(); b.calc = respmatch.calculator(path)
        opt = FIRE(FrechetCellFilter(b, constant_volume=cv), maxstep=0.01 if cv else 0.2, logfile=None); ok = opt.run(fmax=5e-3, steps=300)
        pos = state.positions.detach().numpy(); cell = state.row_vector_cell[0].detach().numpy()
        rms = np.sqrt(((pos - b.positions)**2).sum(1).mean())
        print(f"constant_volume={cv} #{i}: ASE steps {opt.nsteps} converged {ok} | torch-sim steps {steps} | position RMS diff {rms:.1e} Å | cell diff {np.abs(cell-b.cell.array).max():.1e} Å")
