"""The denoiser: a strictly local atomic-cluster-expansion potential (no message passing).

Per edge: radial basis (mixed to ``n_radial`` channels) × sender element embedding × Cartesian
monomials of the edge direction.  Summed over each atom's neighbours this gives the atomic
moments A (channels × monomials); their invariant contractions B feed an MLP whose first layer
is conditioned on the receiving atom's element embedding.  Energy is the sum of atomic energies;
forces and stress come from autograd, so the potential is conservative and every invariance
(rotation, translation, permutation, periodic images) holds by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        n_atoms, width = len(species), max(graph.max_neighbors, 1)
        # Edges laid out densely per receiving atom, (atoms × width): each neighbour sum is then
        # one batched matrix product, with no (E, K, M) outer product as a scatter-add would
        # need.  Empty slots hold a vector at twice the cutoff, where the radial basis is
        # exactly zero (the envelope is clamped there), so they add nothing and get no gradient.
        slots = graph.receiver * width + graph.slot
        empty = vectors.new_zeros(n_atoms * width, 3)
        empty[:, 0] = 2 * self.config.cutoff
        dense = empty.index_copy(0, slots, vectors)
        distance = dense.norm(dim=1)
        radial = self.radial_mix(self.radial(distance))  # (N·W, R)
        angular = self.angular(dense / distance.clamp(min=1e-9)[:, None]).view(n_atoms, width, -1)

        def neighbour_sum(weights):  # A[i, k, m] = Σ_slots weights[k]·angular[m]
            return torch.bmm(weights.view(n_atoms, width, -1).transpose(1, 2), angular)

        n_elements, n_embedding = len(self.config.elements), self.config.n_embedding
        if n_elements == 1:
            # One element: every moment is A[r, s] = emb[s]·A[r], so an invariant of degree d
            # is emb[s]^d times the invariant of A[r].  Contract R channels, not R·S (a quarter
            # of the work); the full features are the powers times these.
            invariants = self.contraction(neighbour_sum(radial) / self.config.avg_neighbors)
            powers = self.sender_embedding.weight[0][:, None] ** self.contraction.degrees  # (S, n_invariants)
            return (invariants.view(n_atoms, self.config.n_radial, 1, -1) * powers).reshape(n_atoms, -1)
        senders = species.new_zeros(n_atoms * width).index_copy(0, slots, species.index_select(0, graph.sender))
        if n_elements < n_embedding:
            # The embedding is linear, so A = Σ_z emb[z] ⊗ (sum over senders of element z): with
            # fewer elements than embedding channels that sum is the narrower one, and the
            # result is the same.
            one_hot = nn.functional.one_hot(senders, n_elements).to(radial.dtype)
            partial = neighbour_sum((radial[:, :, None] * one_hot[:, None, :]).flatten(1))  # (N, R·Z, M)
            partial = partial.view(n_atoms, self.config.n_radial, n_elements, -1)
            moments = torch.einsum("nrzm,zs->nrsm", partial, self.sender_embedding.weight)
            moments = moments.reshape(n_atoms, -1, partial.shape[-1])
        else:
            sender = self.sender_embedding(senders)
            moments = neighbour_sum((radial[:, :, None] * sender[:, None, :]).flatten(1))  # (N, R·S, M)
        return self.contraction(moments / self.config.avg_neighbors)

    def atomic_energies(self, structures: Structures, graph: Graph, vectors: torch.Tensor):
        species = self.species(structures.numbers)
        features = self.invariant_features(species, graph, vectors)
        if len(self.config.elements) == 1:
            hidden = self._one_element_first_layer(features)
        else:
            features = (features - self.feature_mean) / self.feature_scale
            receiver = self.receiver_embedding(species)
            hidden = self.readout[0]((receiver[:, :, None] * features[:, None, :]).flatten(1))
        return self.readout[1:](hidden).squeeze(1) + self.element_energy(species).squeeze(1)

    def _one_element_first_layer(self, features: torch.Tensor) -> torch.Tensor:
        """The first readout layer of a one-element model, on the raw features.

        Its input, receiver embedding ⊗ standardised features, is linear in the features and the
        embedding is one constant vector: both fold into the weights, a layer a quarter as wide.
        """
        first = self.readout[0]
        weight = first.weight.view(first.out_features, self.config.n_embedding, -1)
        weight = torch.einsum("hsf,s->hf", weight, self.receiver_embedding.weight[0]) / self.feature_scale
        return torch.addmm(first.bias - weight @ self.feature_mean, features, weight.T)

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
        """Energy (B,), and optionally forces (N, 3) and stress (B, 3, 3) in ASE units and sign.

        Both come from the gradient g_e = ∂Ẽ/∂v_e on the edge vectors: an edge pushes its
        receiver by +g and its sender by -g, and a homogeneous strain ε changes every edge by
        v·ε, so ∂Ẽ/∂ε = Σ_e v_e ⊗ g_e (symmetrised), the virial.  One gradient serves both and
        avoids differentiating through a per-edge copy of the cell.
        """
        if graph is None:
            graph = build_graph(structures, self.config.cutoff)
        vectors = graph.vectors(structures).detach().requires_grad_(forces or stress)
        atomic = self.atomic_energies(structures, graph, vectors)
        energy = torch.zeros(
            structures.n_structures, dtype=atomic.dtype, device=atomic.device
        ).index_add(0, structures.system, atomic)
        out = {"energy": energy, "atomic_energies": atomic}
        if not (forces or stress):
            return out
        (edge_gradient,) = torch.autograd.grad(
            energy.sum(), vectors, create_graph=create_graph, allow_unused=True
        )
        if edge_gradient is None:  # no edges at all
            edge_gradient = torch.zeros_like(vectors)
        if forces:
            out["forces"] = (
                torch.zeros_like(structures.positions, dtype=atomic.dtype)
                .index_add(0, graph.receiver, edge_gradient)
                .index_add(0, graph.sender, -edge_gradient)
            )
        if stress:
            outer = (vectors[:, :, None] * edge_gradient[:, None, :]).flatten(1)
            system = structures.system.index_select(0, graph.receiver)
            virial = outer.new_zeros(structures.n_structures, 9).index_add(0, system, outer).view(-1, 3, 3)
            virial = 0.5 * (virial + virial.transpose(1, 2))
            volume = structures.volume().clamp(min=1e-12)[:, None, None]
            out["stress"] = torch.where(structures.periodic[:, None, None], virial / volume, 0.0)
        return out
