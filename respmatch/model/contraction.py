"""Rotation-invariant contractions of an atom's Cartesian moments (the ACE "B" features).

The atomic basis A[k, m] holds, per channel k, the neighbour sums of the monomials m of degree
l ≤ l_max.  Expanding each degree into its full symmetric rank-l Cartesian tensor T_l, the
invariants are complete index contractions: T_0 (body order 2), T_l·T_l (order 3), and the
triple contractions T_1T_1T_2, T_2T_2T_2, T_1T_2T_3, T_2T_3T_3 (order 4).  Triple products
that contain T_0 are left to the readout MLP (T_0·T_0 is kept among the squares).  Channels are
not mixed (diagonal in k), as in CACE.

The contractions are never formed on the full tensors at run time: each invariant is a fixed
polynomial in the monomial moments, whose coefficients are worked out once from the einsum
equations below.  Einsums over (atoms × channels) batches of 3×3 and 3×9 matrices ran as tiny
batched matrix products and took half of a model call in the profile; the polynomial form is a
gather of the 70 distinct monomial triples, two products and one small matrix product.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

from respmatch.errors import RespmatchError
from respmatch.model.angular import monomial_exponents

# (einsum over the full tensors T_l1, T_l2, T_l3, the three degrees).
TRIPLE_CONTRACTIONS = (
    ("nka,nkb,nkab->nk", (1, 1, 2)),
    ("nkab,nkbc,nkca->nk", (2, 2, 2)),
    ("nka,nkbc,nkabc->nk", (1, 2, 3)),
    ("nkab,nkacd,nkbcd->nk", (2, 3, 3)),
)


def triple_polynomial(equation: str, l_max: int) -> dict:
    """Coefficients {(m1, m2, m3) sorted monomial indices: c} of a triple contraction."""
    position = {e: i for i, e in enumerate(monomial_exponents(l_max))}
    operands = [term[2:] for term in equation.split("->")[0].split(",")]  # drop the "nk" prefix
    letters = sorted(set("".join(operands)))
    terms: dict[tuple[int, int, int], int] = {}
    for values in itertools.product(range(3), repeat=len(letters)):
        axis = dict(zip(letters, values))
        monomials = tuple(
            sorted(position[tuple([axis[c] for c in operand].count(a) for a in range(3))] for operand in operands)
        )
        terms[monomials] = terms.get(monomials, 0) + 1
    return terms


class SymmetricContraction(nn.Module):
    def __init__(self, l_max: int, nu_max: int):
        super().__init__()
        if not 1 <= nu_max <= 3:
            raise RespmatchError(f"nu_max must be 1, 2 or 3 (got {nu_max})")
        self.l_max, self.nu_max = int(l_max), int(nu_max)
        exponents = monomial_exponents(l_max)
        # T_l·T_l = Σ_m (l! / a!b!c!)·A_m²: each monomial stands for that many tensor entries.
        square = torch.zeros(len(exponents), l_max + 1)
        for m, e in enumerate(exponents):
            square[m, sum(e)] = math.factorial(sum(e)) / math.prod(math.factorial(x) for x in e)
        self.register_buffer("square_weights", square, persistent=False)

        triples = [
            triple_polynomial(equation, l_max)
            for equation, degrees in TRIPLE_CONTRACTIONS
            if nu_max >= 3 and max(degrees) <= l_max
        ]
        # Invariant t = Σ_terms C[term, t]·A_m1·A_m2·A_m3 over the distinct monomial triples.
        terms = sorted({term for polynomial in triples for term in polynomial})
        coefficients = torch.zeros(len(terms), len(triples))
        for t, polynomial in enumerate(triples):
            for term, c in polynomial.items():
                coefficients[terms.index(term), t] = c
        self.n_triples = len(triples)
        for position in range(3):
            index = torch.tensor([term[position] for term in terms], dtype=torch.long)
            self.register_buffer(f"triple_index_{position}", index, persistent=False)
        self.register_buffer("triple_coefficients", coefficients, persistent=False)
        # Polynomial degree in A of each invariant, in output order (1, squares, triples).
        degrees = [1] + ([2] * (self.l_max + 1) if nu_max >= 2 else []) + [3] * self.n_triples
        self.register_buffer("degrees", torch.tensor(degrees), persistent=False)

    @property
    def n_invariants(self) -> int:
        return 1 + (self.l_max + 1 if self.nu_max >= 2 else 0) + self.n_triples

    def forward(self, moments: torch.Tensor) -> torch.Tensor:
        """(N, K, n_monomials) -> (N, K * n_invariants)."""
        n, k, _ = moments.shape
        # Monomials first: gathering whole rows is a contiguous copy (a gather along the last
        # axis was as slow as the old einsums).
        rows = moments.permute(2, 0, 1).reshape(-1, n * k)
        invariants = [rows[:1]]
        if self.nu_max >= 2:
            invariants.append(self.square_weights.T @ (rows * rows))
        if self.n_triples:
            products = (
                rows.index_select(0, self.triple_index_0)
                * rows.index_select(0, self.triple_index_1)
                * rows.index_select(0, self.triple_index_2)
            )
            invariants.append(self.triple_coefficients.T @ products)
        return torch.cat(invariants).T.reshape(n, -1)
