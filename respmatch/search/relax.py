"""Batched FIRE relaxation of many structures in one potential call per step.

The relaxer knows only the ``Potential`` interface (respmatch.potential): the Response Matching
model is one implementation, a universal potential another.

Each structure follows exactly what ASE's ``FIRE`` does on ``FrechetCellFilter(atoms)`` (or on
the bare atoms for position-only stages): its own velocity, time step, mixing and step counter,
per-structure norms, and the filter's generalised coordinates (positions in the reference cell
plus n_atoms·log F for the deformation gradient F).  Structures that finish a stage leave the
batch and waiting ones enter, so the batch stays full.

The host looks at the batch every ``check_every`` steps (1 on the CPU): it retires finished
structures, admits new ones within a count and an atom budget, and renews neighbour lists.  The
steps between are device work alone: a structure that finishes there stays frozen where it
finished (its energy and flags kept) until the host retires it, and one whose neighbour list
may have gone stale skips steps until the host renews it, so each structure takes the same
steps, in the same order, whatever the interval.

Written here rather than taken from torch-sim 0.3.0, after evaluating its batched
``frechet_cell_fire(md_flavor="ase_fire")`` with our model (benchmarks/compare_torch_sim.py):
it ran, but did not follow ASE step for step (end points up to 0.011 Å RMS apart, convergence
after 100 instead of 107 steps), while this relaxer agrees with ASE to about 1e-12 Å with the same
step counts; stage sequences with a kick between stages would also have had to be built around it.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, fields, replace
from functools import cached_property
from typing import Iterable, Iterator

import numpy as np
import torch
from ase import Atoms

from respmatch.errors import RespmatchError
from respmatch.potential import Potential
from respmatch.search.verlet import SKIN, VerletLists
from respmatch.structures import Structures

CELL_MODES = {"fixed": 0, "constant-volume": 1, "full": 2}
MIN_VOLUME_RATIO = 0.25  # a full-cell stage that shrinks a cell 4x has collapsed it
# ASE FIRE defaults (ase.optimize.FIRE).
DT_START, DT_MAX, N_MIN, F_INC, F_DEC, ALPHA_START, F_ALPHA = 0.1, 1.0, 5, 1.1, 0.5, 0.1, 0.99
CHECK_EVERY_DEVICE = 10  # steps between the host's looks at a batch on a GPU (issue 24)
# Atom budget of a CPU batch (``--batch-size auto``): measured on one thread, a step costs the same
# per structure from 512 to 4096 atoms of C8 cells, while C5H8O molecules slow by half past about
# 3,000 atoms (docs/results.md, issue 24).
CPU_MAX_ATOMS = 2048
PROBE_ATOMS = 2048  # atoms of the potential call that measures a GPU batch's memory per atom


@dataclass(frozen=True)
class Stage:
    """One relaxation stage; ``kick`` displaces atoms by U(-kick, kick) Å before it starts.

    With ``anneal_steps`` > 0 the stage's first steps are overdamped Langevin dynamics on the
    pseudo-energy, Δx = μ·F + sqrt(2·μ·k_BT)·ξ, with k_BT falling linearly from ``temperature``
    (eV) to zero, before FIRE takes over from rest: noise lets a start cross the low barriers
    between nearby minima that a pure descent stops in front of.
    """

    name: str
    fmax: float  # eV/Å, on atoms and (filter) cell forces
    max_steps: int  # all steps of the stage, annealing included
    cell: str = "fixed"  # "fixed", "constant-volume" or "full"
    max_step: float = 0.2  # Å, FIRE's maxstep (and the largest move of an atom while annealing)
    kick: float = 0.0
    anneal_steps: int = 0
    temperature: float = 0.0  # eV, k_B·T at the first annealing step
    mobility: float = 0.01  # Å²/eV, μ of the annealing steps

    def __post_init__(self):
        if self.cell not in CELL_MODES:
            raise RespmatchError(f"stage {self.name!r}: cell must be one of {sorted(CELL_MODES)}")
        if self.anneal_steps < 0 or (self.anneal_steps and self.anneal_steps >= self.max_steps):
            raise RespmatchError(
                f"stage {self.name!r}: anneal_steps must be 0 or more and below max_steps ({self.max_steps}), "
                f"got {self.anneal_steps}"
            )
        if not (self.temperature >= 0 and self.mobility > 0):
            raise RespmatchError(
                f"stage {self.name!r}: temperature must be 0 or more and mobility above 0 "
                f"(got {self.temperature} eV, {self.mobility} Å²/eV)"
            )


@dataclass
class Job:
    """A structure on its way through its stages (the Python side of one batch entry)."""

    key: object  # caller's identifier, returned with the result
    atoms: Atoms
    stages: tuple[Stage, ...]
    rng: np.random.Generator | None = None  # draws the kicks
    keep_symmetry: bool = False  # symmetrised forces and stress, as ASE's FixSymmetry
    stage: int = 0
    steps: int = 0
    symmetry: tuple | None = None  # of the current stage's start: ``symmetrize.symmetry_of``


@dataclass
class Relaxed:
    key: object
    atoms: Atoms
    energy: float  # eV, the potential's energy (the RM model's pseudo-energy)
    converged: bool  # the last stage reached its fmax
    steps: int  # over all stages
    stage: str  # name of the last stage run


@dataclass
class FireState:
    """Flat tensors of every structure in the batch (per-atom fields listed in ``PER_ATOM``)."""

    numbers: torch.Tensor  # (N,)
    x: torch.Tensor  # (N, 3) positions in the stage's reference cell
    v: torch.Tensor  # (N, 3)
    n_atoms: torch.Tensor  # (B,)
    periodic: torch.Tensor  # (B,)
    reference_cell: torch.Tensor  # (B, 3, 3) cell at the start of the stage
    x_cell: torch.Tensor  # (B, 3, 3) n_atoms · log F
    v_cell: torch.Tensor  # (B, 3, 3)
    dt: torch.Tensor  # (B,)
    alpha: torch.Tensor  # (B,)
    n_positive: torch.Tensor  # (B,) consecutive steps with P > 0
    steps: torch.Tensor  # (B,) steps taken in this stage
    fmax: torch.Tensor  # (B,)
    max_steps: torch.Tensor  # (B,)
    max_step: torch.Tensor  # (B,)
    cell_mode: torch.Tensor  # (B,)
    anneal_steps: torch.Tensor  # (B,) the first steps of the stage that are Langevin steps
    temperature: torch.Tensor  # (B,) eV, at the first annealing step
    mobility: torch.Tensor  # (B,) Å²/eV
    broken: torch.Tensor  # (B,) a step gave non-finite numbers: kept at its last finite state, to leave
    job: torch.Tensor  # (B,) index into the relaxer's job table
    first: torch.Tensor  # (B,) the next FIRE step is the stage's first (no velocity to judge)
    # A structure that finished its stage at an evaluation: frozen there until the host retires
    # it, with that evaluation's energy, convergence and collapse.
    done: torch.Tensor  # (B,)
    energy: torch.Tensor  # (B,)
    converged: torch.Tensor  # (B,)
    collapsed: torch.Tensor  # (B,)

    PER_ATOM = ("numbers", "x", "v")
    # The fields a FIRE or Langevin step changes.
    STEPPED = ("x", "v", "x_cell", "v_cell", "dt", "alpha", "n_positive", "steps")

    @classmethod
    def start(cls, jobs: list[tuple[int, Job]], dtype, device) -> FireState:
        structures = Structures.from_atoms([job.atoms for _, job in jobs], dtype, device)
        stages = [job.stages[job.stage] for _, job in jobs]
        b = len(jobs)

        def per_structure(values, kind=dtype):
            return torch.tensor(values, dtype=kind, device=device)

        return cls(
            numbers=structures.numbers,
            x=structures.positions,
            v=torch.zeros_like(structures.positions),
            n_atoms=structures.n_atoms,
            periodic=structures.periodic,
            reference_cell=structures.cell,
            x_cell=structures.cell.new_zeros(b, 3, 3),
            v_cell=structures.cell.new_zeros(b, 3, 3),
            dt=per_structure([DT_START] * b),
            alpha=per_structure([ALPHA_START] * b),
            n_positive=per_structure([0] * b, torch.long),
            steps=per_structure([0] * b, torch.long),
            fmax=per_structure([s.fmax for s in stages]),
            max_steps=per_structure([s.max_steps for s in stages], torch.long),
            max_step=per_structure([s.max_step for s in stages]),
            cell_mode=per_structure([CELL_MODES[s.cell] for s in stages], torch.long),
            anneal_steps=per_structure([s.anneal_steps for s in stages], torch.long),
            temperature=per_structure([s.temperature for s in stages]),
            mobility=per_structure([s.mobility for s in stages]),
            broken=per_structure([False] * b, torch.bool),
            job=per_structure([key for key, _ in jobs], torch.long),
            first=per_structure([True] * b, torch.bool),
            done=per_structure([False] * b, torch.bool),
            energy=per_structure([0.0] * b),
            converged=per_structure([False] * b, torch.bool),
            collapsed=per_structure([False] * b, torch.bool),
        )

    @cached_property
    def system(self) -> torch.Tensor:
        # The output size given: on a GPU the count would otherwise be read back to the host.
        return torch.repeat_interleave(
            torch.arange(len(self.n_atoms), device=self.x.device), self.n_atoms, output_size=len(self.x)
        )

    @cached_property
    def deformation(self) -> torch.Tensor:
        """F = exp(x_cell / n_atoms), (B, 3, 3); the identity for position-only stages."""
        return torch.linalg.matrix_exp(self.x_cell / self.n_atoms[:, None, None].to(self.x.dtype))

    def structures(self) -> Structures:
        """Real positions and cells: r = x Fᵀ, H = H0 Fᵀ (ASE's set_positions_frechet)."""
        transpose = self.deformation.transpose(1, 2)
        structures = Structures(
            positions=torch.einsum("na,nab->nb", self.x, transpose.index_select(0, self.system)),
            numbers=self.numbers,
            cell=self.reference_cell @ transpose,
            periodic=self.periodic,
            n_atoms=self.n_atoms,
        )
        structures.system = self.system  # the same atoms: the cached index serves both
        return structures

    def select(self, keep: torch.Tensor) -> FireState:
        atom_keep = keep[self.system]
        return replace(
            self,
            **{
                f.name: getattr(self, f.name)[atom_keep if f.name in self.PER_ATOM else keep]
                for f in fields(self)
            },
        )

    @classmethod
    def concatenate(cls, states: list[FireState]) -> FireState:
        return cls(**{f.name: torch.cat([getattr(s, f.name) for s in states]) for f in fields(cls)})

    def where(self, chosen: torch.Tensor, other: FireState, names: Iterable[str] | None = None) -> FireState:
        """This state for the structures in ``chosen`` (B,) bool, ``other`` for the rest (in the
        fields ``names``; the others are this state's)."""
        atom_chosen = chosen[self.system]

        def pick(name):
            mine, theirs = getattr(self, name), getattr(other, name)
            mask = atom_chosen if name in self.PER_ATOM else chosen
            return torch.where(mask.view(-1, *[1] * (mine.dim() - 1)), mine, theirs)

        names = [f.name for f in fields(self)] if names is None else names
        return replace(self, **{name: pick(name) for name in names})


def filter_forces(
    state: FireState, structures: Structures, out: dict, cell_relaxing: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised forces of ASE's FrechetCellFilter: on x (N, 3) and on x_cell (B, 3, 3).

    ``cell_relaxing``: whether any structure's cell relaxes (the host knows it from the stages).
    """
    deformation = state.deformation
    atom_forces = torch.einsum("na,nab->nb", out["forces"], deformation.index_select(0, state.system))
    cell_forces = torch.zeros_like(state.x_cell)
    relaxing = state.cell_mode > 0
    if cell_relaxing:
        volume = structures.volume()[:, None, None]
        virial = -volume * out["stress"]
        gradient = virial @ torch.linalg.inv_ex(deformation.transpose(1, 2)).inverse
        log_deformation = state.x_cell / state.n_atoms[:, None, None].to(state.x.dtype)
        with torch.enable_grad():
            # Exact derivative of exp at log F (ASE sums expm_frechet over the 9 directions).
            log_f = log_deformation.detach().requires_grad_(True)
            projected = (torch.linalg.matrix_exp(log_f) * gradient.detach()).sum()
            log_force = torch.autograd.grad(projected, log_f)[0]
        constant_volume = (state.cell_mode == CELL_MODES["constant-volume"])[:, None, None]
        trace = log_force.diagonal(dim1=1, dim2=2).sum(-1)[:, None, None] / 3
        eye = torch.eye(3, dtype=log_force.dtype, device=log_force.device)
        log_force = torch.where(constant_volume, log_force - trace * eye, log_force)
        cell_forces = torch.where(
            relaxing[:, None, None], log_force / state.n_atoms[:, None, None].to(log_force.dtype), 0.0
        )
    return atom_forces, cell_forces


def per_structure_sum(state: FireState, atom_values: torch.Tensor, cell_values: torch.Tensor):
    """Σ over each structure's atom rows and cell rows of a (rows, 3) quantity."""
    total = cell_values.sum((1, 2))
    return total.index_add(0, state.system, atom_values.sum(1))


def fire_step(state: FireState, atom_forces: torch.Tensor, cell_forces: torch.Tensor, first: torch.Tensor):
    """One FIRE step of every structure (ASE's FIRE.step, vectorised)."""
    system = state.system
    power = per_structure_sum(state, atom_forces * state.v, cell_forces * state.v_cell)
    force_norm = per_structure_sum(state, atom_forces**2, cell_forces**2).sqrt().clamp(min=1e-30)
    speed = per_structure_sum(state, state.v**2, state.v_cell**2).sqrt()
    downhill = (power > 0) & ~first
    uphill = (power <= 0) & ~first

    mix = torch.where(downhill, state.alpha, 0.0)
    scale = mix * speed / force_norm
    v = (1 - mix[system, None]) * state.v + scale[system, None] * atom_forces
    v_cell = (1 - mix[:, None, None]) * state.v_cell + scale[:, None, None] * cell_forces
    accelerate = downhill & (state.n_positive > N_MIN)
    dt = torch.where(accelerate, (state.dt * F_INC).clamp(max=DT_MAX), state.dt)
    alpha = torch.where(accelerate, state.alpha * F_ALPHA, state.alpha)
    n_positive = torch.where(downhill, state.n_positive + 1, state.n_positive)
    # Going uphill: stop, restart mixing, halve the time step.
    v = torch.where(uphill[system, None], 0.0, v)
    v_cell = torch.where(uphill[:, None, None], 0.0, v_cell)
    alpha = torch.where(uphill, ALPHA_START, alpha)
    dt = torch.where(uphill, dt * F_DEC, dt)
    n_positive = torch.where(uphill, 0, n_positive)

    v = v + dt[system, None] * atom_forces
    v_cell = v_cell + dt[:, None, None] * cell_forces
    dr, dr_cell = dt[system, None] * v, dt[:, None, None] * v_cell
    norm = per_structure_sum(state, dr**2, dr_cell**2).sqrt()
    shrink = torch.where(norm > state.max_step, state.max_step / norm.clamp(min=1e-30), 1.0)
    return replace(
        state,
        x=state.x + shrink[system, None] * dr,
        x_cell=state.x_cell + shrink[:, None, None] * dr_cell,
        v=v,
        v_cell=v_cell,
        dt=dt,
        alpha=alpha,
        n_positive=n_positive,
        steps=state.steps + 1,
    )


def langevin_step(state: FireState, atom_forces: torch.Tensor, cell_forces: torch.Tensor, noise: torch.Tensor):
    """One overdamped Langevin step (Euler–Maruyama) of every structure, at the temperature its
    anneal has fallen to; FIRE restarts from rest after it.  ``noise`` is N(0, 1) per atom, (N, 3).

    The cell follows its force without noise.  No atom moves more than max_step, so the huge
    forces of overlapping atoms in a random start cannot throw them apart.
    """
    system = state.system
    fraction_left = 1 - state.steps.to(state.x.dtype) / state.anneal_steps.clamp(min=1).to(state.x.dtype)
    temperature = state.temperature * fraction_left.clamp(min=0)
    spread = (2 * state.mobility * temperature).sqrt()
    dr = state.mobility[system, None] * atom_forces + spread[system, None] * noise
    length = dr.norm(dim=1, keepdim=True)
    dr = dr * (state.max_step[system, None] / length.clamp(min=1e-30)).clamp(max=1.0)
    dr_cell = state.mobility[:, None, None] * cell_forces
    cell_length = dr_cell.flatten(1).norm(dim=1)
    dr_cell = dr_cell * (state.max_step / cell_length.clamp(min=1e-30)).clamp(max=1.0)[:, None, None]
    return replace(
        state,
        x=state.x + dr,
        x_cell=state.x_cell + dr_cell,
        v=torch.zeros_like(state.v),
        v_cell=torch.zeros_like(state.v_cell),
        dt=torch.full_like(state.dt, DT_START),
        alpha=torch.full_like(state.alpha, ALPHA_START),
        n_positive=torch.zeros_like(state.n_positive),
        steps=state.steps + 1,
    )


def largest_force(state: FireState, atom_forces: torch.Tensor, cell_forces: torch.Tensor):
    """ASE's convergence measure: the largest row norm of the filter forces, per structure."""
    atoms = torch.zeros(len(state.n_atoms), dtype=atom_forces.dtype, device=atom_forces.device)
    atoms = atoms.scatter_reduce(0, state.system, atom_forces.norm(dim=1), "amax")
    return torch.maximum(atoms, cell_forces.norm(dim=2).amax(1))


def keep_finite(previous: FireState, stepped: FireState, moving: torch.Tensor) -> FireState:
    """``stepped`` for the ``moving`` structures (B,) bool, ``previous`` for the others; and
    a structure whose step gave non-finite positions or cell (a force that overflowed, a cell
    blown up past exp's range) keeps its ``previous`` state and is marked broken: it leaves the
    batch unconverged at the next evaluation, with finite numbers, instead of a NaN reaching the
    neighbour lists and stopping the whole batch."""
    # A sum is non-finite when any of its terms is; the deformation is what exp made of x_cell.
    finite = per_structure_sum(stepped, stepped.x, stepped.deformation).isfinite()
    kept = stepped.where(moving & finite, previous, FireState.STEPPED)
    return replace(kept, broken=previous.broken | (moving & ~finite))


def collapsing(state: FireState) -> torch.Tensor:
    """Cells that shrank below MIN_VOLUME_RATIO of their stage-start volume, (B,) bool.

    A poorly trained model can pull a cell into itself; its neighbour count then explodes and
    slows the whole batch to a crawl, so such a structure leaves the batch, not converged.
    det F = exp(tr(log F)) = exp(tr(x_cell) / n_atoms).
    """
    log_ratio = state.x_cell.diagonal(dim1=1, dim2=2).sum(1) / state.n_atoms.to(state.x_cell.dtype)
    return log_ratio < math.log(MIN_VOLUME_RATIO)


def device_atom_budget(potential: Potential, sample: Atoms, device, dtype, fraction: float = 0.5) -> int:
    """The atoms a GPU batch may hold: ``fraction`` of the device's free memory over the peak
    memory per atom of one potential call (forces, stress, neighbour lists) on copies of
    ``sample`` — torch-sim's autobatcher sizes batches by memory in the same spirit."""
    structures = Structures.from_atoms([sample] * max(1, PROBE_ATOMS // len(sample)), dtype, device)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    graph = None
    if potential.cutoff is not None:
        lists = VerletLists(potential.cutoff, cut=False)
        lists.refresh(structures)
        graph = lists.listed(structures, check=False)[0]
    potential(structures, graph, forces=True, stress=True)
    torch.cuda.synchronize(device)
    per_atom = (torch.cuda.max_memory_allocated(device) - before) / len(structures.numbers)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(fraction * free / max(per_atom, 1.0)))


class BatchRelaxer:
    """Relax a stream of jobs, up to ``batch_size`` structures and ``max_atoms`` atoms at a time,
    one potential call per step (``batch_size`` None: the atom budget alone sizes the batch).

    A potential that is a torch module is moved to ``device`` and ``dtype`` in place, as
    ``nn.Module.to`` does; any other is called with the batch in that dtype and on that device.
    ``max_atoms``: the batch's atom budget (a structure larger than it runs alone); by default
    ``CPU_MAX_ATOMS`` on the CPU and, on a GPU, what its free memory holds (``device_atom_budget``).
    ``check_every``: steps between the host's looks at the batch (default 1 on the CPU,
    ``CHECK_EVERY_DEVICE`` elsewhere); the results do not depend on it.  ``cut_lists``: cut
    the neighbour pairs to the cutoff at each step (default: on the CPU, or for a potential not
    exactly zero beyond its cutoff); uncut, no step waits for the host to size the graph.
    """

    def __init__(
        self,
        potential: Potential,
        batch_size: int | None = 64,
        device="cpu",
        dtype=torch.float32,
        *,
        max_atoms: int | None = None,
        check_every: int | None = None,
        cut_lists: bool | None = None,
    ):
        if isinstance(potential, torch.nn.Module):
            potential = potential.to(device=device, dtype=dtype).eval()
        self.potential = potential
        self.batch_size = math.inf if batch_size is None else int(batch_size)
        self.device, self.dtype = device, dtype
        on_cpu = torch.device(device).type == "cpu"
        self.max_atoms = max_atoms if max_atoms is not None else (CPU_MAX_ATOMS if on_cpu else None)
        self.check_every = int(check_every if check_every is not None else (1 if on_cpu else CHECK_EVERY_DEVICE))
        if self.batch_size <= 0 or self.check_every <= 0 or (self.max_atoms is not None and self.max_atoms <= 0):
            raise RespmatchError(
                f"batch size, atom budget and check interval must be positive "
                f"(got {batch_size}, {max_atoms}, {check_every})"
            )
        # Off the CPU, pairs out to cutoff + skin go to a potential that is exactly zero beyond
        # its cutoff, uncut: cutting them to the cutoff would size the graph on the host at
        # every step.  On the CPU the cut graph is the cheaper one.
        exact_zero = getattr(potential, "zero_beyond_cutoff", False)
        self.cut_lists = (on_cpu if cut_lists is None else cut_lists) or not exact_zero
        self.skin = SKIN  # Å, of the neighbour lists
        self.model_calls = 0  # potential calls, one per step of the whole batch
        self.largest_batch = (0, 0)  # (structures, atoms) of the fullest batch so far

    def run(self, jobs: Iterable[Job]) -> Iterator[Relaxed]:
        """Yield each structure as soon as the host sees its last stage end (not in input order)."""
        for group in self.run_groups(jobs):
            yield from group

    def run_groups(self, jobs: Iterable[Job]) -> Iterator[list[Relaxed]]:
        """As ``run``, the structures the host saw end at one look together: a store commits
        them at once (a commit per structure cost more than a C8 cell's relaxation steps)."""
        incoming = iter(jobs)
        restarts: deque[Job] = deque()  # jobs between stages go before new ones
        table: dict[int, Job] = {}
        keys = itertools.count()
        state: FireState | None = None
        lists = None
        if self.potential.cutoff is not None:
            lists = VerletLists(self.potential.cutoff, self.skin, cut=self.cut_lists)
        symmetry = None
        while True:
            # The host's part: retire, admit, renew lists.
            changed = False
            if state is not None and bool(state.done.any()):
                finished = list(self._retire(state, table, restarts))
                if finished:
                    yield finished
                keep = ~state.done
                state = state.select(keep)
                if lists is not None:
                    lists.keep(keep)
                changed = True
            entering = self._admit(state, incoming, restarts, table, keys)
            if entering:
                fresh = FireState.start(entering, self.dtype, self.device)
                state = fresh if state is None else FireState.concatenate([state, fresh])
                changed = True
            if state is None or len(state.n_atoms) == 0:
                return
            self.largest_batch = max(self.largest_batch, (len(state.n_atoms), len(state.x)))
            stages = [job.stages[job.stage] for job in (table[k] for k in state.job.tolist())]
            if changed:
                symmetry = self._symmetry([table[k] for k in state.job.tolist()])
            cell_relaxing = any(stage.cell != "fixed" for stage in stages)
            # Annealing draws each structure's noise from its job's generator on the host.
            anneals = any(stage.anneal_steps for stage in stages)
            interval = 1 if anneals else self.check_every
            structures = state.structures()
            if lists is not None:
                # Lists that might go stale before the next look are renewed now.
                lists.refresh(structures, margin=0.0 if interval == 1 else lists.skin / 2)
            # The device's part: ``interval`` steps.
            for step in range(interval):
                if step:
                    structures = state.structures()
                graph, stale = (None, None) if lists is None else lists.listed(structures, check=step > 0)
                out = self.potential(structures, graph, forces=True, stress=cell_relaxing)
                self.model_calls += 1
                if symmetry is not None:
                    out["forces"] = symmetry.forces(structures.cell, out["forces"])
                    if "stress" in out:
                        out["stress"] = symmetry.stress(structures.cell, out["stress"])
                atom_forces, cell_forces = filter_forces(state, structures, out, cell_relaxing)
                state = self._step(
                    state, out["energy"].detach(), atom_forces.detach(), cell_forces.detach(), stale,
                    table if anneals else None,
                )

    def _step(self, state, energy, atom_forces, cell_forces, stale, table) -> FireState:
        """Judge every structure at this evaluation, then step the ones still relaxing.

        A structure that ends its stage here is frozen as it is (``done``); one whose list may be
        ``stale`` is neither judged nor stepped.  ``table``: the job table, when a structure may
        anneal (its noise is drawn from its job's generator).
        """
        annealing = state.steps < state.anneal_steps
        converged = (largest_force(state, atom_forces, cell_forces) < state.fmax) & ~annealing
        collapsed = collapsing(state)
        finished = converged | collapsed | state.broken | (state.steps >= state.max_steps)
        active = ~state.done if stale is None else ~(state.done | stale)
        ending = finished & active
        moving = active & ~finished
        fired = fire_step(state, atom_forces, cell_forces, state.first)
        if table is not None and bool((annealing & moving).any()):
            noise = self._noise(state, annealing & moving, [table[k] for k in state.job.tolist()])
            fired = langevin_step(state, atom_forces, cell_forces, noise).where(annealing, fired, FireState.STEPPED)
        state = keep_finite(state, fired, moving)
        return replace(
            state,
            # FIRE's first step (no velocity to judge) follows the last annealing step.
            first=torch.where(moving, state.steps <= state.anneal_steps, state.first),
            done=state.done | ending,
            energy=torch.where(ending, energy, state.energy),
            converged=torch.where(ending, converged, state.converged),
            collapsed=torch.where(ending, collapsed, state.collapsed),
        )

    def _admit(self, state, incoming, restarts, table, keys) -> list[tuple[int, Job]]:
        """Jobs to enter the batch: restarts first, then new ones, while the count and the atom
        budget allow (a job that does not fit waits at the head of the restarts)."""
        count = 0 if state is None else len(state.n_atoms)
        atoms = 0 if state is None else len(state.x)
        entering = []
        while count < self.batch_size:
            job = restarts.popleft() if restarts else next(incoming, None)
            if job is None:
                break
            if self.max_atoms is None:  # a GPU's budget, from the first structure to relax
                self.max_atoms = device_atom_budget(self.potential, job.atoms, self.device, self.dtype)
            if self.max_atoms is not None and count and atoms + len(job.atoms) > self.max_atoms:
                restarts.appendleft(job)
                break
            if job.keep_symmetry:
                job.symmetry = self._symmetry_module().symmetry_of(job.atoms)
            key = next(keys)
            table[key] = job
            entering.append((key, job))
            count, atoms = count + 1, atoms + len(job.atoms)
        return entering

    def _retire(self, state: FireState, table: dict, restarts: deque) -> Iterator[Relaxed]:
        """Take the done structures' jobs out of the table: results, or restarts for a next stage."""
        finished = torch.nonzero(state.done).flatten()
        atoms_list = state.structures().select(finished).to_atoms()
        host = {
            name: getattr(state, name).index_select(0, finished).tolist()
            for name in ("job", "steps", "energy", "converged", "collapsed", "broken")
        }
        for i, atoms in enumerate(atoms_list):
            job = table.pop(host["job"][i])
            job.steps += host["steps"][i]
            if host["collapsed"][i] or host["broken"][i]:
                why = "collapsed" if host["collapsed"][i] else "non-finite step"
                name = f"{job.stages[job.stage].name} ({why})"
                yield Relaxed(job.key, atoms, host["energy"][i], False, job.steps, name)
                continue
            result = self._advance(job, atoms, host["energy"][i], host["converged"][i])
            if result is None:
                restarts.append(job)
            else:
                yield result

    def _noise(self, state: FireState, annealing: torch.Tensor, jobs: list[Job]) -> torch.Tensor:
        """N(0, 1) displacements of the annealing structures' atoms, each from its own job's
        generator (so a start anneals alike whatever the batch it shares); zeros elsewhere."""
        blocks = []
        for job, n_atoms, anneals in zip(jobs, state.n_atoms.tolist(), annealing.tolist()):
            if anneals and job.rng is None:
                job.rng = np.random.default_rng()
            blocks.append(job.rng.standard_normal((n_atoms, 3)) if anneals else np.zeros((n_atoms, 3)))
        return torch.as_tensor(np.concatenate(blocks), dtype=self.dtype, device=self.device)

    @staticmethod
    def _symmetry_module():
        """``search.symmetrize``, imported by the runs that keep symmetry: it loads spglib, SciPy
        and the evaluation package, which the start-up of every other run can do without."""
        from respmatch.search import symmetrize

        return symmetrize

    def _symmetry(self, jobs: list[Job]):
        """The batch's symmetry operations (a ``symmetrize.BatchSymmetry``), if one of its
        structures keeps its symmetry (the others get the identity alone)."""
        if not any(job.keep_symmetry for job in jobs):
            return None
        identity = [(np.eye(3)[None], np.arange(len(job.atoms))[None]) for job in jobs]
        return self._symmetry_module().BatchSymmetry.build(
            [job.symmetry if job.keep_symmetry else plain for job, plain in zip(jobs, identity)],
            self.dtype,
            self.device,
        )

    @staticmethod
    def _advance(job: Job, atoms: Atoms, energy: float, converged: bool) -> Relaxed | None:
        """Move a job to its next stage (applying that stage's kick), or finish it."""
        stage = job.stages[job.stage]
        if job.stage + 1 == len(job.stages):
            return Relaxed(job.key, atoms, energy, converged, job.steps, stage.name)
        job.stage += 1
        kick = job.stages[job.stage].kick
        if kick > 0:
            rng = job.rng if job.rng is not None else np.random.default_rng()
            atoms.positions += rng.uniform(-kick, kick, size=atoms.positions.shape)
        job.atoms = atoms
        return None


def relax(
    potential: Potential,
    atoms_list: list[Atoms],
    stages: tuple[Stage, ...],
    batch_size: int = 64,
    dtype=torch.float32,
    seed: int = 0,
) -> list[Relaxed]:
    """Relax ``atoms_list`` through ``stages``; results in input order."""
    jobs = (
        Job(key=i, atoms=a.copy(), stages=stages, rng=np.random.default_rng([seed, i]))
        for i, a in enumerate(atoms_list)
    )
    results = BatchRelaxer(potential, batch_size=batch_size, dtype=dtype).run(jobs)
    return sorted(results, key=lambda r: r.key)
