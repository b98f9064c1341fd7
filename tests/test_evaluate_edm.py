"""EDM's QM9 metrics on molecules built in code, with the answers worked out by hand from its
bond-length tables (pm: C-C single 154, double 134, triple 120; C-H 109; margins 10, 5, 3)."""

import numpy as np
import pytest
from ase import Atoms

from respmatch.evaluate.edm import bond_order, edm_metrics, edm_record


def ethene(h_distance=1.09):
    """Planar C2H4, C=C 1.33 Å, H-C-H 117°; no H-H pair closer than 1.8 Å."""
    half = np.radians(117 / 2)
    positions = [[0, 0, 0], [1.33, 0, 0]]
    for carbon, sign in ((0.0, -1), (1.33, 1)):
        for side in (1, -1):
            positions.append([carbon + sign * h_distance * np.cos(half), side * h_distance * np.sin(half), 0])
    return Atoms("C2H4", positions=positions)


@pytest.mark.parametrize(
    "pair, distance, order",
    [(("C", "C"), 1.53, 1), (("C", "C"), 1.38, 2), (("C", "C"), 1.22, 3), (("C", "C"), 1.65, 0),
     (("C", "O"), 1.24, 2), (("C", "O"), 1.40, 1), (("H", "C"), 1.18, 1), (("H", "C"), 1.20, 0),
     (("H", "H"), 0.83, 1), (("O", "F"), 1.10, 1)],  # O-F has no double bond in the tables
)
def test_bond_orders_follow_the_tables(pair, distance, order):
    assert bond_order(*pair, distance) == order
    assert bond_order(*reversed(pair), distance) == order


def test_a_valid_molecule_is_stable_and_valid():
    record = edm_record(ethene())
    assert record == {"n_atoms": 6, "n_stable_atoms": 6, "molecule_stable": True, "edm_smiles": "[H]C([H])=C([H])[H]"}


def test_a_lost_hydrogen_is_unstable_but_still_rdkit_valid():
    """One H pulled to 3 Å: its carbon has bond orders 2 + 1 = 3 and the H none, so 4 of 6 atoms
    are stable; RDKit fills the carbon's missing valence with an implicit H, so the largest
    fragment (ethene again) sanitises.  Stability is the stricter of EDM's metrics."""
    molecule = ethene()
    molecule.positions[2] = molecule.positions[0] + [-3.0, 0.0, 0.0]
    record = edm_record(molecule)
    assert (record["n_stable_atoms"], record["molecule_stable"]) == (4, False)
    assert record["edm_smiles"] == "[H]C=C([H])[H]"


def test_a_five_bonded_carbon_is_invalid():
    crowded = ethene() + Atoms("H", positions=[[-0.2, 0.0, 1.05]])  # a fifth neighbour of C0
    record = edm_record(crowded)
    assert record["edm_smiles"] is None
    assert (record["n_stable_atoms"], record["molecule_stable"]) == (6, False)  # C0 has 5 of 7 atoms


def test_pooled_metrics():
    lost = ethene()
    lost.positions[2] = lost.positions[0] + [-3.0, 0.0, 0.0]
    metrics = edm_metrics([ethene(), ethene(), lost])
    assert metrics["atom_stable"] == pytest.approx(16 / 18)
    assert metrics["molecule_stable"] == pytest.approx(2 / 3)
    assert metrics["rdkit_valid"] == 1.0
    assert metrics["unique"] == pytest.approx(2 / 3) and metrics["valid_unique"] == pytest.approx(2 / 3)


def test_an_element_outside_the_tables_is_a_clear_error():
    with pytest.raises(ValueError, match="Si-H"):
        edm_record(Atoms("SiH", positions=[[0, 0, 0], [1.5, 0, 0]]))
