"""Response labels: perturb equilibrium structures and label the restoring response
(docs/design.md §1.1).

Each equilibrium structure gives one copy per (strain scale, noise level) pair; periodic cells are
strained (elastic stress and energy from an isotropic stiffness), every copy gets uniform
displacement noise (harmonic restoring force -d) and a short-range repulsion between atoms that
came too close.  Everything is drawn with a ``torch.Generator`` so an epoch's labels are
reproducible from its seed, and the whole draw is vectorised over copies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from respmatch.config import PlainDict, checked_options
from respmatch.elements import MAX_Z
from respmatch.errors import RespmatchError
from respmatch.files import atomic_path, check_output
from respmatch.neighbors import neighbor_pairs
from respmatch.structures import Structures

NOISE_LEVELS = (0, 1, 2, 3, 4, 6, 8, 10, 12, 16, 32)
STRAIN_SCALES = tuple(float(s) for s in np.round(np.linspace(-0.1, 0.1, 11), 10))


@dataclass(frozen=True)
class LabelConfig(PlainDict):
    """Perturbation and response parameters; the defaults are the paper's crystal settings."""

    displacement_step: float = 0.05  # δ, Å: noise level k displaces by k·δ·U(-½, ½)
    noise_levels: tuple[float, ...] = NOISE_LEVELS
    repulsion_radius: float = 0.75  # r_rep, Å
    # Ours, not the paper's (off by default): each element pair repels below this fraction of
    # its shortest distance in the training structures (see ``with_pair_repulsion``), which
    # fills ``pair_repulsion_radii`` with (Z1, Z2, r) before training.
    repulsion_data_fraction: float = 0.0
    pair_repulsion_radii: tuple[tuple[int, int, float], ...] = ()
    strain: bool = True  # strain periodic cells (ignored for molecules)
    strain_scales: tuple[float, ...] = STRAIN_SCALES
    cell_noise: float = 0.1  # random cell distortion, in units of V0^(1/3)
    youngs_modulus: float = 1.0  # eV/Å³
    poisson_ratio: float = 0.3
    spring_constant: float = 1.0  # eV/Å²: harmonic restoring force -k·d
    label_noise: float = 0.0  # std of Gaussian noise added to force labels, eV/Å
    # 0: every (strain scale, noise level) pair once per structure, as the paper.  k > 0: k pairs
    # drawn at random per structure, so an epoch over thousands of structures stays affordable.
    copies_per_structure: int = 0


LABEL_PRESETS = {
    "molecule": LabelConfig(displacement_step=0.1, repulsion_radius=0.7, strain=False),
    "crystal": LabelConfig(displacement_step=0.05, repulsion_radius=0.75, strain=True),
}


def label_preset(name: str, **overrides) -> LabelConfig:
    if name not in LABEL_PRESETS:
        raise RespmatchError(f"unknown label preset {name!r} (choose from {sorted(LABEL_PRESETS)})")
    return replace(LABEL_PRESETS[name], **checked_options(LabelConfig, overrides, "--label"))


@dataclass
class LabelledStructures(Structures):
    forces: torch.Tensor  # (N, 3) eV/Å
    stress: torch.Tensor  # (B, 3, 3) eV/Å³, ASE sign (positive when stretched); zero for molecules
    energy: torch.Tensor  # (B,) pseudo-energy, eV
    noise_level: torch.Tensor  # (B,) k of each copy
    strain_scale: torch.Tensor  # (B,) s of each copy (0 for molecules)

    def to_atoms(self) -> list[Atoms]:
        """Copies as ASE Atoms carrying their labels on a SinglePointCalculator."""
        out = super().to_atoms()
        forces = self.forces.detach().cpu().double().numpy()
        for b, (atoms, start) in enumerate(zip(out, self.first_atom.tolist())):
            results = {
                "energy": float(self.energy[b]),
                "forces": forces[start : start + len(atoms)],
            }
            if atoms.pbc.all():
                s = self.stress[b].detach().cpu().double().numpy()
                results["stress"] = s[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            atoms.calc = SinglePointCalculator(atoms, **results)
            atoms.info["noise_level"] = float(self.noise_level[b])
            atoms.info["strain_scale"] = float(self.strain_scale[b])
        return out


def isotropic_stress(strain: torch.Tensor, youngs_modulus: float, poisson_ratio: float):
    """σ = λ tr(ε) I + 2μ ε: the Voigt isotropic stiffness with engineering shear, in tensor form."""
    lam = youngs_modulus * poisson_ratio / ((1 + poisson_ratio) * (1 - 2 * poisson_ratio))
    mu = youngs_modulus / (2 * (1 + poisson_ratio))
    trace = strain.diagonal(dim1=-2, dim2=-1).sum(-1)
    eye = torch.eye(3, dtype=strain.dtype, device=strain.device)
    return lam * trace[..., None, None] * eye + 2 * mu * strain


def draw_labels(
    structures: Structures, config: LabelConfig, generator: torch.Generator
) -> LabelledStructures:
    """Perturbed, labelled copies of every structure: (strain scales ×) noise levels each, or
    ``config.copies_per_structure`` of those pairs drawn at random."""
    dtype = structures.positions.dtype
    levels = torch.tensor(config.noise_levels, dtype=dtype)
    scales = torch.tensor(config.strain_scales if config.strain else (0.0,), dtype=dtype)
    strained = structures.periodic & config.strain
    per_structure = torch.where(strained, len(scales) * len(levels), len(levels))
    if config.copies_per_structure > 0:
        k = config.copies_per_structure
        source = torch.arange(structures.n_structures).repeat_interleave(k)
        rank = (torch.rand(len(source), generator=generator) * per_structure[source]).long()
    else:
        source = torch.repeat_interleave(torch.arange(structures.n_structures), per_structure)
        # Within a structure's block, copies run over scales (outer) then noise levels (inner).
        rank = torch.arange(len(source)) - torch.repeat_interleave(
            torch.cumsum(per_structure, 0) - per_structure, per_structure
        )
    level = levels[rank % len(levels)]
    scale = torch.where(strained[source], scales[rank // len(levels) % len(scales)], 0.0)
    copies = structures.select(source)

    cell, strain_energy, stress = _strain_cells(copies, scale, strained[source], config, generator)
    fractional = _fractional(copies.positions, copies.cell, copies)
    positions = torch.einsum("na,nab->nb", fractional, cell[copies.system])
    positions = torch.where(copies.periodic[copies.system, None], positions, copies.positions)

    system = copies.system
    uniform = torch.rand(positions.shape, generator=generator, dtype=dtype) - 0.5
    displacement = level[system, None] * config.displacement_step * uniform
    displacement = _minimum_image(displacement, cell, copies)
    positions = positions + displacement
    restoring = -config.spring_constant * displacement

    moved = replace(copies, positions=positions, cell=cell)
    repulsion_forces, repulsion_energy = _repulsion(moved, repulsion_table(config))
    forces = restoring + repulsion_forces
    if config.label_noise > 0:
        forces = forces + config.label_noise * torch.randn(
            forces.shape, generator=generator, dtype=dtype
        )
    harmonic_energy = torch.zeros(moved.n_structures, dtype=dtype).index_add_(
        0, system, 0.5 * (restoring**2).sum(1) / config.spring_constant
    )
    return LabelledStructures(
        positions=positions,
        numbers=copies.numbers,
        cell=cell,
        periodic=copies.periodic,
        n_atoms=copies.n_atoms,
        forces=forces,
        stress=stress,
        energy=harmonic_energy + repulsion_energy + strain_energy,
        noise_level=level,
        strain_scale=scale,
    )


def _fractional(positions, cell, structures):
    """Fractional coordinates of periodic atoms (molecules: passed through unchanged)."""
    safe = torch.where(structures.periodic[:, None, None], cell, torch.eye(3, dtype=cell.dtype))
    return torch.einsum("na,nab->nb", positions, torch.linalg.inv(safe)[structures.system])


def _strain_cells(copies, scale, strained, config, generator):
    """Strained cells H = H0(1+s) + U(-½,½)·c·V0^(1/3), Green–Lagrange strain, elastic response.

    F = H0⁻¹H and ε = ½(FᵀF - I) exactly as docs/design.md §1.1 states them (rows of H are lattice
    vectors).  Molecules and unstrained copies keep their cell and get zero stress and energy.
    """
    h0 = copies.cell
    dtype = h0.dtype
    volume0 = torch.linalg.det(h0).abs()
    distortion = torch.rand((copies.n_structures, 3, 3), generator=generator, dtype=dtype) - 0.5
    h = h0 * (1 + scale[:, None, None]) + distortion * config.cell_noise * volume0[
        :, None, None
    ] ** (1 / 3)
    h = torch.where(strained[:, None, None], h, h0)
    eye = torch.eye(3, dtype=dtype)
    safe_h0 = torch.where(copies.periodic[:, None, None], h0, eye)
    deformation = torch.linalg.solve(safe_h0, torch.where(copies.periodic[:, None, None], h, eye))
    strain = 0.5 * (deformation.transpose(1, 2) @ deformation - eye)
    strain = torch.where(strained[:, None, None], strain, 0.0)
    stress = isotropic_stress(strain, config.youngs_modulus, config.poisson_ratio)
    energy = 0.5 * (stress * strain).sum((1, 2)) * volume0
    return h, energy, stress


def _minimum_image(displacement, cell, structures):
    """Wrap displacements of periodic atoms to their shortest lattice image.

    Rounding fractional coordinates is only the minimum image in near-orthogonal cells; in
    skewed ones (e.g. the fcc primitive cell) a neighbouring translate can be shorter, so the
    shortest of the 27 translates around the rounded vector is taken.
    """
    if not bool(structures.periodic.any()):
        # Molecules have nothing to wrap; the 27 translates of every atom below would take
        # gigabytes for a whole data set's copies (all of QM9: 7 GB, to be thrown away).
        return displacement
    system = structures.system
    fractional = _fractional(displacement, cell, structures)
    rounded = torch.einsum("na,nab->nb", fractional - torch.round(fractional), cell[system])
    steps = torch.cartesian_prod(*[torch.tensor([-1.0, 0.0, 1.0], dtype=cell.dtype)] * 3)
    candidates = rounded[:, None, :] + torch.einsum("ka,nab->nkb", steps, cell[system])
    shortest = (candidates**2).sum(-1).argmin(1)
    wrapped = candidates[torch.arange(len(shortest)), shortest]
    return torch.where(structures.periodic[system, None], wrapped, displacement)


def with_pair_repulsion(config: LabelConfig, structures: list[Atoms]) -> LabelConfig:
    """``config`` with each element pair repelling below ``repulsion_data_fraction`` of its
    shortest distance in the equilibrium ``structures`` (never below ``repulsion_radius``);
    ``config`` itself when the fraction is 0 or the radii are already set.

    The paper's single r_rep (0.7 Å for molecules) lets a C–H or C–C pair sit at 0.7–0.8 Å, far
    inside any real bond, where the noisy restoring labels say little: models trained so put
    minima there.  The data's own shortest distances set a wall for each pair that equilibrium
    structures never touch when the fraction is below 1.
    """
    if config.repulsion_data_fraction <= 0 or config.pair_repulsion_radii:
        return config
    keys, distances = [], []
    for atoms in structures:
        i, j, d = neighbor_pairs(
            atoms.positions, atoms.cell.array, bool(atoms.pbc.all()), 3.0, full=False, quantities="ijd"
        )
        a, b = atoms.numbers[i], atoms.numbers[j]
        keys.append(np.minimum(a, b) * (MAX_Z + 1) + np.maximum(a, b))
        distances.append(d)
    keys, distances = np.concatenate(keys).astype(np.int64), np.concatenate(distances)
    shortest = np.full((MAX_Z + 1) ** 2, np.inf)
    np.minimum.at(shortest, keys, distances)
    radii = tuple(
        (int(key // (MAX_Z + 1)), int(key % (MAX_Z + 1)),
         round(max(config.repulsion_radius, config.repulsion_data_fraction * float(shortest[key])), 4))
        for key in np.flatnonzero(np.isfinite(shortest))
    )
    return replace(config, pair_repulsion_radii=radii)


def repulsion_table(config: LabelConfig) -> torch.Tensor:
    """r_rep of every element pair, (Z+1, Z+1): ``repulsion_radius`` unless a pair has its own."""
    table = torch.full((MAX_Z + 1, MAX_Z + 1), float(config.repulsion_radius), dtype=torch.float64)
    for a, b, radius in config.pair_repulsion_radii:
        table[int(a), int(b)] = table[int(b), int(a)] = float(radius)
    return table


def _repulsion(structures: Structures, radii: torch.Tensor):
    """Pair repulsion (1 - r²/r_rep²)² for every pair closer than its r_rep (``radii`` by element
    pair, from ``repulsion_table``): forces and energies."""
    radius = float(radii.max())
    positions = structures.positions.detach().numpy()
    cells = structures.cell.detach().numpy()
    pairs, shifts, owners = [], [], []
    for b, (start, n) in enumerate(zip(structures.first_atom.tolist(), structures.n_atoms.tolist())):
        i, j, shift = neighbor_pairs(
            positions[start : start + n], cells[b], bool(structures.periodic[b]), radius, full=False
        )
        if len(i):
            pairs.append(np.stack([i, j]).astype(np.int64) + start)
            shifts.append(shift)
            owners.append(np.full(len(i), b))
    dtype = structures.positions.dtype
    forces = torch.zeros_like(structures.positions)
    energy = torch.zeros(structures.n_structures, dtype=dtype)
    if not pairs:
        return forces, energy
    i, j = torch.as_tensor(np.concatenate(pairs, axis=1))
    shift = torch.as_tensor(np.concatenate(shifts), dtype=dtype)
    owner = torch.as_tensor(np.concatenate(owners))
    vector = (
        structures.positions[j]
        - structures.positions[i]
        + torch.einsum("ea,eab->eb", shift, structures.cell[owner])
    )
    r_rep = radii.to(dtype)[structures.numbers[i], structures.numbers[j]]
    closeness = (1 - (vector**2).sum(1) / r_rep**2).clamp(min=0)
    energy.index_add_(0, owner, closeness**2)
    push = 4 * closeness[:, None] * vector / r_rep[:, None] ** 2  # -dE/dx_j; the opposite acts on i
    forces.index_add_(0, j, push).index_add_(0, i, -push)
    return forces, energy


def export_labels(path, structures: Structures, config: LabelConfig, seed: int = 0) -> int:
    """Write one fixed labelled set (energy, forces, stress, noise level, strain) to extxyz."""
    check_output(path, kind="structures")
    generator = torch.Generator().manual_seed(seed)
    labelled = draw_labels(structures, config, generator)
    frames = labelled.to_atoms()
    with atomic_path(path) as temporary:
        write(temporary, frames, format="extxyz")
    return len(frames)
