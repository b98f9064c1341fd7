"""The denoiser: a strictly local atomic-cluster-expansion potential (no message passing).

Per edge: radial basis (mixed to ``n_radial`` channels) × sender element embedding × Cartesian
monomials of the edge direction.  Summed over each atom's neighbours this gives the atomic
moments A (channels × monomials); their invariant contractions B feed an MLP whose first layer
is conditioned on the receiving atom's element embedding.  Energy is the sum of atomic energies;
forces and stress come from autograd, so the potential is conservative and every invariance
(rotation, translation, permutation, periodic images) holds by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from respmatch.config import PlainDict
from respmatch.elements import MAX_Z, missing_elements_error
from respmatch.model.angular import CartesianAngularBasis
from respmatch.model.contraction import SymmetricContraction
from respmatch.model.radial import BesselRadialBasis
from respmatch.neighbors import Graph, build_graph
from respmatch.structures import Structures

@dataclass(frozen=True)
class ModelConfig(PlainDict):
    """Architecture; the defaults are the paper's (DESIGN §1.2)."""

    elements: tuple[int, ...]
    cutoff: float = 4.5
    n_bessel: int = 6
    envelope_p: int = 2
    n_radial: int = 8
    n_embedding: int = 4
    l_max: int = 3
    nu_max: int = 3
    hidden: tuple[int, ...] = (24, 12)
    avg_neighbors: float = 1.0  # moments are divided by this, so features start O(1)


class Denoiser(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if not config.elements or not all(1 <= z <= MAX_Z for z in config.elements):
            raise ValueError(f"elements must be atomic numbers 1..{MAX_Z}, got {config.elements}")
        self.config = config
        n_elements = len(config.elements)
        species = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        species[list(config.elements)] = torch.arange(n_elements)
        self.register_buffer("species_of_z", species, persistent=False)
        # Å³ per atom of each element, fitted on the training crystals (used to size search cells).
        self.register_buffer("element_volumes", torch.zeros(n_elements))

        self.radial = BesselRadialBasis(config.cutoff, config.n_bessel, config.envelope_p)
        self.radial_mix = nn.Linear(config.n_bessel, config.n_radial, bias=False)
        self.sender_embedding = nn.Embedding(n_elements, config.n_embedding)
        self.receiver_embedding = nn.Embedding(n_elements, config.n_embedding)
        self.angular = CartesianAngularBasis(config.l_max)
        self.contraction = SymmetricContraction(config.l_max, config.nu_max)
        n_features = config.n_radial * config.n_embedding * self.contraction.n_invariants
        # Invariants of different body order differ by orders of magnitude: standardise them
        # with statistics of the training data (set by ``standardize_features``).
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_scale", torch.ones(n_features))
        widths = (n_features * config.n_embedding, *config.hidden)
        layers = []
        for width_in, width_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(width_in, width_out), nn.SiLU()]
        self.readout = nn.Sequential(*layers, nn.Linear(widths[-1], 1))
        self.element_energy = nn.Embedding(n_elements, 1)
        nn.init.zeros_(self.element_energy.weight)

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers to the model's element indices; fail clearly on unseen elements."""
        out_of_range = (numbers < 1) | (numbers > MAX_Z)
        species = self.species_of_z[numbers.clamp(0, MAX_Z)]
        missing = (species < 0) | out_of_range
        if bool(missing.any()):
            raise missing_elements_error(numbers[missing].tolist(), self.config.elements)
        return species

    def invariant_features(self, species, graph: Graph, vectors: torch.Tensor) -> torch.Tensor:
        """Rotation-invariant B features of every atom, before standardisation, (N, F)."""
        distance = vectors.norm(dim=1)
        unit = vectors / distance.clamp(min=1e-9)[:, None]
        radial = self.radial_mix(self.radial(distance))
        angular = self.angular(unit)
        sender_species = species.index_select(0, graph.sender)
        n_elements, n_embedding = len(self.config.elements), self.config.n_embedding
        if n_elements < n_embedding:
            # The embedding is linear, so A = Σ_z emb[z] ⊗ (sum over senders of element z): with
            # fewer elements than embedding channels that sum is the narrower one (a quarter of
            # the edge work for one-element carbon models), and the result is the same.
            one_hot = nn.functional.one_hot(sender_species, n_elements).to(radial.dtype)
            weights = (radial[:, :, None] * one_hot[:, None, :]).flatten(1)  # (E, R·Z)
            partial = self._neighbour_sum(weights, angular, graph, len(species))
            partial = partial.view(len(species), self.config.n_radial, n_elements, -1)
            moments = torch.einsum("nrzm,zs->nrsm", partial, self.sender_embedding.weight)
            moments = moments.reshape(len(species), -1, partial.shape[-1])
        else:
            sender = self.sender_embedding(sender_species)
            weights = (radial[:, :, None] * sender[:, None, :]).flatten(1)  # (E, R·S)
            moments = self._neighbour_sum(weights, angular, graph, len(species))
        return self.contraction(moments / self.config.avg_neighbors)

    def atomic_energies(self, structures: Structures, graph: Graph, vectors: torch.Tensor):
        species = self.species(structures.numbers)
        features = self.invariant_features(species, graph, vectors)
        features = (features - self.feature_mean) / self.feature_scale
        receiver = self.receiver_embedding(species)
        conditioned = (receiver[:, :, None] * features[:, None, :]).flatten(1)
        return self.readout(conditioned).squeeze(1) + self.element_energy(species).squeeze(1)

    @staticmethod
    def _neighbour_sum(weights, angular, graph: Graph, n_atoms: int) -> torch.Tensor:
        """A[i, k, m] = Σ_edges→i weights[e, k]·angular[e, m], as one batched matrix product.

        Edges are laid out densely per receiving atom (zero padding), which avoids building the
        (E, K, M) outer product that a scatter-add would need: the dominant cost of the model.
        """
        width = max(graph.max_neighbors, 1)
        flat = graph.receiver * width + graph.slot

        def dense(values):  # scattered separately: the backward of slices would zero-fill copies
            out = values.new_zeros(n_atoms * width, values.shape[1]).index_copy(0, flat, values)
            return out.view(n_atoms, width, values.shape[1])

        return torch.bmm(dense(weights).transpose(1, 2), dense(angular))

    @torch.no_grad()
    def standardize_features(self, structures: Structures) -> None:
        """Set feature mean and scale from ``structures`` (e.g. a sample of labelled copies)."""
        graph = build_graph(structures, self.config.cutoff)
        features = self.invariant_features(
            self.species(structures.numbers), graph, graph.vectors(structures)
        )
        self.feature_mean.copy_(features.mean(0))
        # Root mean square, not std: a nearly constant feature must not be blown up (nor its
        # gradient, which would make early forces explode).
        self.feature_scale.copy_(features.pow(2).mean(0).sqrt().clamp(min=1e-6))

    def forward(
        self,
        structures: Structures,
        graph: Graph | None = None,
        *,
        forces: bool = True,
        stress: bool = False,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energy (B,), and optionally forces (N, 3) and stress (B, 3, 3) in ASE units and sign."""
        if graph is None:
            graph = build_graph(structures, self.config.cutoff)
        positions = structures.positions
        if forces:
            positions = positions.detach().requires_grad_(True)
        strain = torch.zeros_like(structures.cell, requires_grad=stress)
        strained = structures
        if stress:
            # A homogeneous strain maps positions and cell r -> r(I + ε); dE/dε is the virial.
            deformation = torch.eye(3, dtype=strain.dtype, device=strain.device) + 0.5 * (
                strain + strain.transpose(1, 2)
            )
            strained = replace(
                structures,
                positions=torch.einsum("na,nab->nb", positions, deformation[structures.system]),
                cell=structures.cell @ deformation,
            )
        vectors = graph.vectors(strained, strained.positions if stress else positions)
        atomic = self.atomic_energies(structures, graph, vectors)
        energy = torch.zeros(
            structures.n_structures, dtype=atomic.dtype, device=atomic.device
        ).index_add(0, structures.system, atomic)
        out = {"energy": energy, "atomic_energies": atomic}
        wrt = ([positions] if forces else []) + ([strain] if stress else [])
        if wrt:
            grads = torch.autograd.grad(
                energy.sum(), wrt, create_graph=create_graph, allow_unused=True
            )
            grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt)]
            if forces:
                out["forces"] = -grads[0]
            if stress:
                volume = structures.volume()
                periodic = structures.periodic[:, None, None]
                out["stress"] = torch.where(
                    periodic, grads[-1] / volume.clamp(min=1e-12)[:, None, None], 0.0
                )
        return out
