"""The physical potentials of the re-check and the funnel, all local (their weights ship in their
wheels), in one registry (``POTENTIALS``): one class per potential.

Each gives an ASE calculator (what ASE's optimisers drive, one structure at a time), the
elements it was fitted for, and, for the universal crystal potentials, a batched ``Potential``
(respmatch.potential) that the RM search's batched relaxer drives, many cells per call.
Importing a package is deferred to first use, so that a missing one is one clear error, not an
import failure of respmatch.  A new potential is one more class here.
"""

from __future__ import annotations

from functools import cache
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

import torch
from ase import Atoms
from ase.data import chemical_symbols

from respmatch.errors import RespmatchError
from respmatch.neighbors import Graph
from respmatch.structures import Structures


class PhysicalPotential:
    name: str
    kind: str  # "crystal" (periodic cells) or "molecule"
    package: str  # the PyPI package that ships it
    model: str  # the model inside the package

    def covered_elements(self) -> frozenset[int]:
        """Atomic numbers the potential was fitted for."""
        raise NotImplementedError

    def calculator(self):
        """A new ASE calculator on the CPU."""
        raise NotImplementedError

    def batched(self, compiled: bool = False):
        """A new batched ``Potential`` for the RM relaxer (``compiled``: under torch.compile, where
        the potential supports it)."""
        raise RespmatchError(f"potential {self.name!r} has no batched form (batched: {', '.join(BATCHED)})")

    def load(self, module: str):
        """One of the package's modules, or one line that says how to install it."""
        try:
            return import_module(module)
        except ImportError as error:
            raise RespmatchError(
                f"potential {self.name} needs the Python package {self.package!r}, which cannot be "
                f"imported ({error}); install it with: pip install {self.package}"
            ) from error


class SevenNet0(PhysicalPotential):
    name, kind, package, model = "sevennet-0", "crystal", "sevenn", "7net-0"

    def covered_elements(self):
        config = self.load("sevenn.util").load_checkpoint(self.model).config
        return frozenset(int(z) for z in config[self.load("sevenn._keys").TYPE_MAP])

    def calculator(self):
        return self.load("sevenn.calculator").SevenNetCalculator(self.model, device="cpu")

    def batched(self, compiled: bool = False):
        return SevenNetPotential(compiled)


class CHGNet(PhysicalPotential):
    name, kind, package, model = "chgnet", "crystal", "chgnet", "0.3.0"

    def covered_elements(self):
        return frozenset(range(1, 95))  # CHGNet's atom embedding covers H to Pu

    def calculator(self):
        return self.load("chgnet.model.dynamics").CHGNetCalculator(use_device="cpu")

    def batched(self, compiled: bool = False):
        return CHGNetPotential()


class XTB(PhysicalPotential):
    """GFN1- or GFN2-xTB through tblite, for molecules."""

    kind, package = "molecule", "tblite"

    def __init__(self, name: str, method: str):
        self.name, self.model = name, method

    def covered_elements(self):
        return frozenset(range(1, 87))  # GFN1/GFN2-xTB are parametrised for H to Rn

    def calculator(self):
        return self.load("tblite.ase").TBLite(method=self.model, verbosity=0)


POTENTIALS: dict[str, PhysicalPotential] = {
    p.name: p for p in (SevenNet0(), CHGNet(), XTB("gfn2-xtb", "GFN2-xTB"), XTB("gfn1-xtb", "GFN1-xTB"))
}
BATCHED = tuple(name for name, p in POTENTIALS.items() if type(p).batched is not PhysicalPotential.batched)
DEFAULT_POTENTIAL = {"crystal": "sevennet-0", "molecule": "gfn2-xtb"}


def potential_info(name: str) -> PhysicalPotential:
    if name not in POTENTIALS:
        raise RespmatchError(f"unknown potential {name!r} (choose from {', '.join(POTENTIALS)})")
    return POTENTIALS[name]


def package_version(name: str) -> str:
    """'PACKAGE VERSION MODEL', what a record says it was checked with."""
    potential = potential_info(name)
    try:
        return f"{potential.package} {version(potential.package)} {potential.model}"
    except PackageNotFoundError as error:
        raise RespmatchError(
            f"potential {name} needs the Python package {potential.package!r}, which is not installed; "
            f"install it with: pip install {potential.package}"
        ) from error


@cache
def covered_elements(name: str) -> frozenset[int]:
    """Atomic numbers the potential was fitted for."""
    return potential_info(name).covered_elements()


def check_structures(name: str, structures: list[tuple[str, Atoms]]) -> None:
    """Refuse, naming the first offending record, what the potential cannot judge."""
    potential = potential_info(name)
    package_version(name)
    for where, atoms in structures:
        periodic = bool(atoms.pbc.all())
        if periodic != (potential.kind == "crystal"):
            what = "a periodic crystal" if periodic else "a molecule (no periodic cell)"
            raise RespmatchError(f"{where}: {what}, but {name} is a {potential.kind} potential")
    for where, atoms in structures:
        check_elements(name, where, atoms.numbers.tolist())


def check_elements(name: str, where: str, numbers) -> None:
    """Refuse, in one line naming ``where``, atomic numbers the potential was not fitted for."""
    missing = sorted(set(int(z) for z in numbers) - covered_elements(name))
    if missing:
        symbols = ", ".join(chemical_symbols[z] for z in missing)
        raise RespmatchError(f"{where}: potential {name} does not cover element(s) {symbols}")


@cache
def ase_calculator(name: str):
    """The potential's ASE calculator on the CPU, loaded once per process."""
    return potential_info(name).calculator()


@cache
def batched_potential(name: str, compiled: bool = False):
    """The potential as a batched ``Potential`` for the RM relaxer (crystal potentials only),
    loaded once per process (``compiled``: see ``SevenNetPotential``)."""
    return potential_info(name).batched(compiled)


class SevenNetPotential:
    """SevenNet-0 on a batch of cells, on the relaxer's own neighbour graph (one call per step).

    The graph is handed over in SevenNet's layout (edge i -> j with vector r_j - r_i + shift), as
    sevenn's own torch-sim interface builds it, so SevenNet computes no neighbour lists itself.
    SevenNet runs in float32 only; the batch comes back in its own dtype.

    ``compiled``: each convolution's tensor product (e3nn) runs under ``torch.compile``, which
    fuses its many small per-path products and the zero-filled gradients of its input slices
    (docs/results.md, "SevenNet-0 on the CPU"); the first calls compile.
    """

    def __init__(self, compiled: bool = False):
        info = POTENTIALS["sevennet-0"]
        self.keys = info.load("sevenn._keys")
        self.data_class = info.load("sevenn.atom_graph_data").AtomGraphData
        self.collate = info.load("torch_geometric.loader.dataloader").Collater([], None, None)
        model = info.load("sevenn.util").load_checkpoint(info.model).build_model()
        model.set_is_batch_data(True)
        model.eval_type_map = torch.tensor(True)
        if compiled:
            for name, module in model.named_children():
                if name.endswith("_convolution"):
                    module.convolution = torch.compile(module.convolution, dynamic=True)
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
        info = POTENTIALS["chgnet"]
        self.model = info.load("chgnet.model.model").CHGNet.load(verbose=False, use_device="cpu")
        self.adaptor = info.load("pymatgen.io.ase").AseAtomsAdaptor

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
