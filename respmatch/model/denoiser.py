"""The denoiser: an atomic-cluster-expansion potential, strictly local by default.

Per edge: radial basis (mixed to ``n_radial`` channels) × sender element embedding × Cartesian
monomials of the edge direction.  Summed over each atom's neighbours this gives the atomic
moments A (channels × monomials); their invariant contractions B feed an MLP whose first layer
is conditioned on the receiving atom's element embedding.  Energy is the sum of atomic energies;
forces and stress come from autograd, so the potential is conservative and every invariance
(rotation, translation, permutation, periodic images) holds by construction.

With ``message_passing = L > 0`` (off in the paper's model) L interaction layers follow, in the
manner of MACE: each atom's invariant features of the previous layer, with its element, are mixed
linearly into ``n_radial`` scalar channels h; these take the place of the sender embedding in a
second set of moments, Σ_j R_k(r_ij)·h_j[k]·Y_m(r̂_ij), contracted as before.  An atom's energy
then depends on its neighbours' environments (reach (L + 1) × cutoff), and the triple
contractions of h raise the body order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from respmatch.config import PlainDict
from respmatch.elements import MAX_Z, missing_elements_error
from respmatch.errors import RespmatchError
from respmatch.model.angular import CartesianAngularBasis
from respmatch.model.contraction import SymmetricContraction
from respmatch.model.radial import BesselRadialBasis
from respmatch.neighbors import Graph, build_graph
from respmatch.structures import Structures


class NeighbourSum(torch.autograd.Function):
    """A[n, k, m] = Σ_w weights[k, n, w]·angular[m, n, w]: (K, N, W), (M, N, W) -> (N, K, M).

    Forward: one batched product of (N, K, W) by (N, W, M).  Written out because autograd's
    own backward gives the gradient of the (N, W, M) factor as products with rows of M numbers
    (profiled: eight times slower than computing it as (N, M, W), 1.8 ms of a 9 ms model call
    for K = 8).  The backward is made of differentiable operations, so training can
    differentiate forces once more.
    """

    @staticmethod
    def forward(ctx, weights, angular):
        ctx.save_for_backward(weights, angular)
        return torch.bmm(weights.transpose(0, 1), angular.permute(1, 2, 0))

    @staticmethod
    def backward(ctx, grad):
        weights, angular = ctx.saved_tensors
        grad_weights = grad_angular = None
        if ctx.needs_input_grad[0]:
            grad_weights = torch.bmm(grad, angular.transpose(0, 1)).transpose(0, 1)
        if ctx.needs_input_grad[1]:
            grad_angular = torch.bmm(grad.transpose(1, 2), weights.transpose(0, 1)).transpose(0, 1)
        return grad_weights, grad_angular


@dataclass(frozen=True)
class ModelConfig(PlainDict):
    """Architecture; the defaults are the paper's (docs/design.md §1.2)."""

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
    message_passing: int = 0  # interaction layers after the local one; 0 is the paper's model

    def __post_init__(self):
        """Refuse, with the option named, a value no model can have (a zero cutoff, no channels)."""
        at_least = {"cutoff": 0.0, "n_bessel": 1, "envelope_p": 1, "n_radial": 1, "n_embedding": 1,
                    "l_max": 0, "nu_max": 1, "avg_neighbors": 0.0, "message_passing": 0}
        for name, low in at_least.items():
            value = getattr(self, name)
            if not (value > low if isinstance(low, float) else value >= low):
                bound = f"above {low:g}" if isinstance(low, float) else f"at least {low}"
                raise RespmatchError(f"--model {name}={value!r}: must be {bound}")
        if not self.hidden or any(int(width) < 1 for width in self.hidden):
            raise RespmatchError(f"--model hidden={self.hidden!r}: layer widths must be at least 1")


class Denoiser(nn.Module):
    # Exactly zero beyond the cutoff, value and gradient (the envelope is clamped there): pairs
    # listed a little past it may be passed in uncut (the relaxer does so on a GPU).
    zero_beyond_cutoff = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        if not config.elements or not all(1 <= z <= MAX_Z for z in config.elements):
            raise RespmatchError(f"elements must be atomic numbers 1..{MAX_Z}, got {config.elements}")
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
        if config.message_passing < 0:
            raise RespmatchError(f"message_passing must be 0 or more layers (got {config.message_passing})")
        n_local = config.n_radial * config.n_embedding * self.contraction.n_invariants
        n_message = config.n_radial * self.contraction.n_invariants  # features of each interaction layer
        self.layer_widths = (n_local,) + (n_message,) * config.message_passing
        # Per interaction layer: node features h from the previous layer's (element ⊗ features),
        # and the radial channels they are carried along.
        self.message_in = nn.ModuleList(
            nn.Linear(width * config.n_embedding, config.n_radial) for width in self.layer_widths[:-1]
        )
        self.message_radial = nn.ModuleList(
            nn.Linear(config.n_bessel, config.n_radial, bias=False) for _ in self.layer_widths[1:]
        )
        n_features = sum(self.layer_widths)
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
        self._checked_numbers = None  # the last numbers tensor found to hold only known elements

    @property
    def cutoff(self) -> float:
        """Neighbour-list cutoff in Å (what makes the model a ``respmatch.potential.Potential``)."""
        return self.config.cutoff

    def species(self, numbers: torch.Tensor) -> torch.Tensor:
        """Map atomic numbers to the model's element indices; fail clearly on unseen elements."""
        species = self.species_of_z[numbers.clamp(0, MAX_Z)]
        # A relaxer passes the same numbers tensor at every step: checked once (the check reads
        # a flag back from the device).
        if numbers is not self._checked_numbers:
            missing = (species < 0) | (numbers < 1) | (numbers > MAX_Z)
            if bool(missing.any()):
                raise missing_elements_error(numbers[missing].tolist(), self.config.elements)
            self._checked_numbers = numbers
        return species

    def edge_layout(self, graph: Graph, vectors: torch.Tensor, n_atoms: int) -> torch.Tensor:
        """Edge vectors laid out densely per receiving atom, components first: (3, N, W).

        Each neighbour sum is then one batched matrix product (no (E, K, M) outer product as a
        scatter-add would need), and the per-edge basis functions work on contiguous rows.
        Empty slots hold a vector at twice the cutoff, where the radial basis is exactly zero
        (the envelope is clamped there): they add nothing and get no gradient.
        """
        width = max(graph.max_neighbors, 1)
        empty = vectors.new_zeros(3, n_atoms * width)
        empty[0] = 2 * self.config.cutoff
        return empty.index_copy(1, graph.dense_index(width), vectors.T).view(3, n_atoms, width)

    def invariant_features(self, species, graph: Graph, edges: torch.Tensor) -> torch.Tensor:
        """Rotation-invariant features of every atom, before standardisation, (N, F).

        ``edges`` as laid out by ``edge_layout``.  The local B features, then those of each
        interaction layer.
        """
        return torch.cat(self.layer_features(species, graph, edges), 1)

    def layer_features(self, species, graph: Graph, edges: torch.Tensor) -> list[torch.Tensor]:
        """The raw invariants of each layer: local first, then one block per interaction layer."""
        _, n_atoms, width = edges.shape
        # Not norm(dim=0): that reduction over the outer axis ran 50× slower.
        distance = edges.square().sum(0).sqrt()
        bessel = self.radial(distance).view(self.config.n_bessel, -1)  # basis first: (6, N·W)
        angular = self.angular(edges / distance.clamp(min=1e-9))  # (M, N, W)
        layers = [self._local_invariants(species, graph, bessel, angular)]
        if not self.config.message_passing:
            return layers
        receiver = self.receiver_embedding(species)
        slots = graph.dense_index(width)
        offset = 0
        for message_in, message_radial in zip(self.message_in, self.message_radial):
            previous = layers[-1]
            scale = self.feature_scale[offset : offset + previous.shape[1]]
            standard = (previous - self.feature_mean[offset : offset + previous.shape[1]]) / scale
            offset += previous.shape[1]
            nodes = message_in((receiver[:, :, None] * standard[:, None, :]).flatten(1))  # (N, R)
            # The senders' node features in the dense layout, channels first: (R, N, W).
            # Empty slots hold zeros (their radial basis is zero too).
            senders = nodes.new_zeros(nodes.shape[1], n_atoms * width)
            senders = senders.index_copy(1, slots, nodes.index_select(0, graph.sender).T)
            senders = senders.view(-1, n_atoms, width)
            radial = (message_radial.weight @ bessel).view(-1, n_atoms, width)
            moments = NeighbourSum.apply(radial * senders, angular)  # (N, R, M)
            layers.append(self.contraction(moments / self.config.avg_neighbors))
        return layers

    def _local_invariants(self, species, graph: Graph, bessel, angular) -> torch.Tensor:
        """The strictly local B features (N, R·S·n_invariants) from the per-edge bases."""
        _, n_atoms, width = angular.shape
        # The bias-free mixing layer applied to the basis-first layout: (R, 6) @ (6, N·W).
        radial = (self.radial_mix.weight @ bessel).view(-1, n_atoms, width)

        def neighbour_sum(weights):
            return NeighbourSum.apply(weights, angular)

        n_elements, n_embedding = len(self.config.elements), self.config.n_embedding
        if n_elements == 1:
            # One element: every moment is A[r, s] = emb[s]·A[r], so an invariant of degree d
            # is emb[s]^d times the invariant of A[r].  Contract R channels, not R·S (a quarter
            # of the work); the full features are the powers times these.
            invariants = self.contraction(neighbour_sum(radial) / self.config.avg_neighbors)
            powers = self.sender_embedding.weight[0][:, None] ** self.contraction.degrees  # (S, n_invariants)
            return (invariants.view(n_atoms, self.config.n_radial, 1, -1) * powers).reshape(n_atoms, -1)
        senders = species.new_zeros(n_atoms * width)
        senders = senders.index_copy(0, graph.dense_index(width), species.index_select(0, graph.sender))
        senders = senders.view(n_atoms, width)
        if n_elements < n_embedding:
            # The embedding is linear, so A = Σ_z emb[z] ⊗ (sum over senders of element z): with
            # fewer elements than embedding channels that sum is the narrower one, and the
            # result is the same.
            one_hot = nn.functional.one_hot(senders, n_elements).permute(2, 0, 1).to(radial.dtype)
            partial = neighbour_sum((radial[:, None] * one_hot[None]).flatten(0, 1))  # (N, R·Z, M)
            partial = partial.view(n_atoms, self.config.n_radial, n_elements, -1)
            moments = torch.einsum("nrzm,zs->nrsm", partial, self.sender_embedding.weight)
            moments = moments.reshape(n_atoms, -1, partial.shape[-1])
        else:
            sender = self.sender_embedding(senders).permute(2, 0, 1)  # (S, N, W)
            moments = neighbour_sum((radial[:, None] * sender[None]).flatten(0, 1))  # (N, R·S, M)
        return self.contraction(moments / self.config.avg_neighbors)

    def atomic_energies(self, structures: Structures, graph: Graph, edges: torch.Tensor):
        """Atomic pseudo-energies (N,) from the edge vectors laid out by ``edge_layout``."""
        species = self.species(structures.numbers)
        features = self.invariant_features(species, graph, edges)
        if len(self.config.elements) == 1 and not self.config.message_passing:
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
        edges = self.edge_layout(graph, graph.vectors(structures), len(structures.numbers))
        species = self.species(structures.numbers)
        # Layer by layer: an interaction layer's input is the previous layer standardised.
        offset = 0
        for layer, width in enumerate(self.layer_widths):
            features = self.layer_features(species, graph, edges)[layer]
            self.feature_mean[offset : offset + width] = features.mean(0)
            # Root mean square, not std: a nearly constant feature must not be blown up (nor its
            # gradient, which would make early forces explode).
            self.feature_scale[offset : offset + width] = features.pow(2).mean(0).sqrt().clamp(min=1e-6)
            offset += width

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

        Both come from the gradient g = ∂Ẽ/∂v on the laid-out edge vectors: an edge pushes its
        receiver by +g and its sender by -g, and a homogeneous strain ε changes every edge by
        v·ε, so ∂Ẽ/∂ε = Σ v ⊗ g (symmetrised), the virial.  One gradient serves both and
        avoids differentiating through a per-edge copy of the cell.
        """
        if graph is None:
            graph = build_graph(structures, self.config.cutoff)
        n_atoms = len(structures.numbers)
        edges = self.edge_layout(graph, graph.vectors(structures).detach(), n_atoms)
        edges.requires_grad_(forces or stress)
        atomic = self.atomic_energies(structures, graph, edges)
        energy = torch.zeros(
            structures.n_structures, dtype=atomic.dtype, device=atomic.device
        ).index_add(0, structures.system, atomic)
        out = {"energy": energy, "atomic_energies": atomic}
        if not (forces or stress):
            return out
        # Every atom has at least one (maybe empty) slot, so the energy always depends on edges.
        (gradient,) = torch.autograd.grad(energy.sum(), edges, create_graph=create_graph)
        if forces:
            sender_push = gradient.flatten(1).index_select(1, graph.dense_index(edges.shape[2])).T
            out["forces"] = gradient.sum(2).T.index_add(0, graph.sender, -sender_push)
        if stress:
            vectors = edges if create_graph else edges.detach()
            per_atom = torch.einsum("anw,bnw->nab", vectors, gradient).flatten(1)
            virial = per_atom.new_zeros(structures.n_structures, 9).index_add(0, structures.system, per_atom)
            virial = virial.view(-1, 3, 3)
            virial = 0.5 * (virial + virial.transpose(1, 2))
            volume = structures.volume().clamp(min=1e-12)[:, None, None]
            out["stress"] = torch.where(structures.periodic[:, None, None], virial / volume, 0.0)
        return out
