"""The physical potentials of the re-check, all local (their weights ship in their wheels).

Each name maps to an ASE calculator (what ASE's optimisers drive, one structure at a time) and,
for the universal crystal potentials, a batched ``Potential`` (respmatch.potential) that the
RM search's batched relaxer can drive, many cells per call.  Importing a package is deferred to
first use, so that a missing one is one clear error, not an import failure of respmatch.
"""

from __future__ import annotations

from respmatch.errors import RespmatchError

from dataclasses import dataclass
from functools import cache
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

import torch
from ase import Atoms
from ase.data import chemical_symbols

from respmatch.neighbors import Graph
from respmatch.structures import Structures


@dataclass(frozen=True)
class PotentialInfo:
    name: str
    kind: str  # "crystal" (periodic cells) or "molecule"
    package: str  # the PyPI package that ships it
    model: str  # the model inside the package


POTENTIALS = {
    "sevennet-0": PotentialInfo("sevennet-0", "crystal", "sevenn", "7net-0"),
    "chgnet": PotentialInfo("chgnet", "crystal", "chgnet", "0.3.0"),
    "gfn2-xtb": PotentialInfo("gfn2-xtb", "molecule", "tblite", "GFN2-xTB"),
    "gfn1-xtb": PotentialInfo("gfn1-xtb", "molecule", "tblite", "GFN1-xTB"),
}
DEFAULT_POTENTIAL = {"crystal": "sevennet-0", "molecule": "gfn2-xtb"}
XTB_ELEMENTS = frozenset(range(1, 87))  # GFN1/GFN2-xTB are parametrised for H to Rn
CHGNET_ELEMENTS = frozenset(range(1, 95))  # CHGNet's atom embedding covers H to Pu


def potential_info(name: str) -> PotentialInfo:
    if name not in POTENTIALS:
        raise RespmatchError(f"unknown potential {name!r} (choose from {', '.join(POTENTIALS)})")
    return POTENTIALS[name]


def _import(info: PotentialInfo, module: str):
    try:
        return import_module(module)
    except ImportError as error:
        raise RespmatchError(
            f"potential {info.name} needs the Python package {info.package!r}, which cannot be "
            f"imported ({error}); install it with: pip install {info.package}"
        ) from error


def package_version(name: str) -> str:
    """'PACKAGE VERSION MODEL', what a record says it was checked with."""
    info = potential_info(name)
    try:
        return f"{info.package} {version(info.package)} {info.model}"
    except PackageNotFoundError as error:
        raise RespmatchError(
            f"potential {name} needs the Python package {info.package!r}, which is not installed; "
            f"install it with: pip install {info.package}"
        ) from error


@cache
def covered_elements(name: str) -> frozenset[int]:
    """Atomic numbers the potential was fitted for."""
    info = potential_info(name)
    if info.kind == "molecule":
        return XTB_ELEMENTS
    if name == "chgnet":
        return CHGNET_ELEMENTS
    util = _import(info, "sevenn.util")
    return frozenset(int(z) for z in util.load_checkpoint(info.model).config[_import(info, "sevenn._keys").TYPE_MAP])


def check_structures(name: str, structures: list[tuple[str, Atoms]]) -> None:
    """Refuse, naming the first offending record, what the potential cannot judge."""
    info = potential_info(name)
    package_version(name)
    for where, atoms in structures:
        periodic = bool(atoms.pbc.all())
        if periodic != (info.kind == "crystal"):
            what = "a periodic crystal" if periodic else "a molecule (no periodic cell)"
            raise RespmatchError(f"{where}: {what}, but {name} is a {info.kind} potential")
    covered = covered_elements(name)
    for where, atoms in structures:
        missing = sorted(set(atoms.numbers.tolist()) - covered)
        if missing:
            symbols = ", ".join(chemical_symbols[z] for z in missing)
            raise RespmatchError(f"{where}: {name} does not cover element(s) {symbols}")


@cache
def ase_calculator(name: str):
    """The potential's ASE calculator on the CPU, loaded once per process."""
    info = potential_info(name)
    if name == "sevennet-0":
        return _import(info, "sevenn.calculator").SevenNetCalculator(info.model, device="cpu")
    if name == "chgnet":
        return _import(info, "chgnet.model.dynamics").CHGNetCalculator(use_device="cpu")
    return _import(info, "tblite.ase").TBLite(method=info.model, verbosity=0)


class SevenNetPotential:
    """SevenNet-0 on a batch of cells, on the relaxer's own neighbour graph (one call per step).

    The graph is handed over in SevenNet's layout (edge i -> j with vector r_j - r_i + shift), as
    sevenn's own torch-sim interface builds it, so SevenNet computes no neighbour lists itself.
    SevenNet runs in float32 only; the batch comes back in its own dtype.
    """

    def __init__(self):
        info = potential_info("sevennet-0")
        util = _import(info, "sevenn.util")
        self.keys = _import(info, "sevenn._keys")
        self.data_class = _import(info, "sevenn.atom_graph_data").AtomGraphData
        self.collate = _import(info, "torch_geometric.loader.dataloader").Collater([], None, None)
        model = util.load_checkpoint(info.model).build_model()
        model.set_is_batch_data(True)
        model.eval_type_map = torch.tensor(True)
        self.model = model.eval()
        self.cutoff = float(model.cutoff)

    def __call__(self, structures: Structures, graph: Graph | None = None, *, forces=True, stress=False):
        key = self.keys
        batch = structures.to(dtype=torch.float32)
        system = batch.system.index_select(0, graph.receiver)
        data = []
        for b, (start, n) in enumerate(zip(batch.first_atom.tolist(), batch.n_atoms.tolist())):
            edges = torch.nonzero(system == b).flatten()
            edge_index = torch.stack([graph.receiver[edges], graph.sender[edges]]) - start
            shift = graph.shift[edges].to(torch.float32)
            positions, cell = batch.positions[start : start + n], batch.cell[b]
            numbers = batch.numbers[start : start + n]
            vectors = positions[edge_index[1]] - positions[edge_index[0]] + shift @ cell
            data.append(
                self.data_class(
                    **{
                        key.NODE_FEATURE: numbers,
                        key.ATOMIC_NUMBERS: numbers,
                        key.POS: positions,
                        key.EDGE_IDX: edge_index,
                        key.EDGE_VEC: vectors,
                        key.CELL: cell,
                        key.CELL_SHIFT: shift,
                        key.CELL_VOLUME: torch.det(cell),
                        key.NUM_ATOMS: torch.tensor(n),
                        key.DATA_MODALITY: None,
                        key.INFO: {},
                    }
                )
            )
        output = self.model(self.collate(data))
        like = structures.positions
        out = {
            "energy": output[key.PRED_TOTAL_ENERGY].detach().to(like.dtype),
            "forces": output[key.PRED_FORCE].detach().to(like.dtype),
        }
        if stress:
            # SevenNet: xx yy zz xy yz zx, with the opposite sign to ASE's.
            xx, yy, zz, xy, yz, zx = (-output[key.PRED_STRESS].detach().to(like.dtype)).unbind(1)
            out["stress"] = torch.stack(
                [torch.stack([xx, xy, zx], 1), torch.stack([xy, yy, yz], 1), torch.stack([zx, yz, zz], 1)], 1
            )
        return out


class CHGNetPotential:
    """CHGNet 0.3.0 on a batch of cells through its own batched ``predict_structure``.

    CHGNet builds its graphs itself (``cutoff = None``); energies come per atom, stress in GPa.
    """

    cutoff = None

    def __init__(self):
        info = potential_info("chgnet")
        self.model = _import(info, "chgnet.model.model").CHGNet.load(verbose=False, use_device="cpu")
        self.adaptor = _import(info, "pymatgen.io.ase").AseAtomsAdaptor

    def __call__(self, structures: Structures, graph: Graph | None = None, *, forces=True, stress=False):
        crystals = [self.adaptor.get_structure(atoms) for atoms in structures.to_atoms()]
        predictions = self.model.predict_structure(crystals, task="efs", batch_size=len(crystals))
        if isinstance(predictions, dict):  # CHGNet answers one structure with one dict
            predictions = [predictions]
        like = structures.positions

        def tensor(values):
            return torch.as_tensor(values, dtype=like.dtype, device=like.device)

        out = {
            "energy": tensor([p["e"] * len(c) for p, c in zip(predictions, crystals)]),
            "forces": tensor(torch.cat([torch.as_tensor(p["f"]) for p in predictions])),
        }
        if stress:
            gpa = 1 / 160.21766208  # eV/Å³ per GPa
            out["stress"] = tensor(torch.stack([torch.as_tensor(p["s"]) for p in predictions]) * gpa)
        return out


BATCHED = {"sevennet-0": SevenNetPotential, "chgnet": CHGNetPotential}


@cache
def batched_potential(name: str):
    """The potential as a batched ``Potential`` for the RM relaxer (crystal potentials only)."""
    if name not in BATCHED:
        raise RespmatchError(f"potential {name!r} has no batched form (batched: {', '.join(BATCHED)})")
    return BATCHED[name]()
