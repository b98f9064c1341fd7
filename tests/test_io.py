import csv

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import write
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter

from respmatch.io import StructureError, is_periodic, read_structures, validate_structure


def cif_text(atoms):
    return str(CifWriter(AseAtomsAdaptor.get_structure(atoms)))


def write_csv(path, rows, fieldnames=("material_id", "pretty_formula", "cif")):
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


def assert_error(sources, *words):
    with pytest.raises(StructureError) as info:
        read_structures(sources)
    for word in words:
        assert str(word) in str(info.value)
    return str(info.value)


# --- reading ---------------------------------------------------------------


def test_extxyz_round_trip(tmp_path):
    water, si = molecule("H2O"), bulk("Si", "diamond", a=5.43)
    path = tmp_path / "mixed.xyz"
    write(path, [water, si], format="extxyz")

    read = read_structures(path)

    assert len(read) == 2
    assert not read[0].pbc.any() and read[1].pbc.all()
    assert not is_periodic(read[0]) and is_periodic(read[1])
    np.testing.assert_allclose(read[0].positions, water.positions, atol=1e-6)
    np.testing.assert_allclose(read[1].positions, si.positions, atol=1e-6)
    np.testing.assert_allclose(read[1].cell.array, si.cell.array, atol=1e-6)
    assert [a.info["source"] for a in read] == [f"{path}:0", f"{path}:1"]


def test_cif_from_pymatgen(tmp_path):
    si = bulk("Si", "diamond", a=5.43)
    path = tmp_path / "si.cif"
    AseAtomsAdaptor.get_structure(si).to(filename=str(path))

    (read,) = read_structures(str(path))

    assert len(read) == len(si) and read.pbc.all()
    assert read.get_volume() == pytest.approx(si.get_volume())
    assert read.info["source"] == f"{path}:block 0 (Si)"


def test_cif_with_several_blocks_of_the_same_name(tmp_path):
    path = tmp_path / "two.cif"
    path.write_text(cif_text(bulk("Si")) + cif_text(bulk("Si", cubic=True)))

    read = read_structures(path)

    assert [len(a) for a in read] == [2, 8]
    assert read[1].info["source"] == f"{path}:block 1 (Si)"


def test_cdvae_csv(tmp_path):
    nacl, cu = bulk("NaCl", "rocksalt", a=5.64), bulk("Cu")
    path = write_csv(
        tmp_path / "train.csv",
        [
            {"material_id": "mp-22862", "pretty_formula": "NaCl", "cif": cif_text(nacl)},
            {"material_id": "mp-30", "pretty_formula": "Cu", "cif": cif_text(cu)},
        ],
    )

    read = read_structures(path)

    assert [a.get_chemical_formula() for a in read] == ["ClNa", "Cu"]
    assert read[0].get_volume() == pytest.approx(nacl.get_volume())
    assert [a.info["source"] for a in read] == [f"{path}:row 0 (mp-22862)", f"{path}:row 1 (mp-30)"]


def test_directory_is_read_recursively_in_sorted_order(tmp_path):
    (tmp_path / "b").mkdir()
    write(tmp_path / "b" / "water.xyz", molecule("H2O"), format="extxyz")
    (tmp_path / "a.cif").write_text(cif_text(bulk("Cu")))
    (tmp_path / "notes.txt").write_text("not a structure")

    read = read_structures(tmp_path)

    assert [a.get_chemical_formula() for a in read] == ["Cu", "H2O"]
    assert read[0].info["source"].startswith(str(tmp_path / "a.cif"))
    assert read[1].info["source"] == f"{tmp_path / 'b' / 'water.xyz'}:0"


def test_atoms_objects_are_copied_and_named(tmp_path):
    water = molecule("H2O")
    read = read_structures([bulk("Cu"), water])
    assert [a.info["source"] for a in read] == ["<Atoms #0>", "<Atoms #1>"]
    assert read[1] is not water and "source" not in water.info


# --- bad files ---------------------------------------------------------------


def test_nonexistent_path(tmp_path):
    assert_error(tmp_path / "missing.xyz", "missing.xyz", "no such file")


def test_empty_files(tmp_path):
    (tmp_path / "empty.cif").write_text("")
    (tmp_path / "blank.xyz").write_text("\n\n")
    write_csv(tmp_path / "header_only.csv", [])
    assert_error(tmp_path / "empty.cif", "empty.cif", "empty file")
    assert_error(tmp_path / "blank.xyz", "blank.xyz", "empty file")
    assert_error(tmp_path / "header_only.csv", "header_only.csv", "empty file")


def test_unknown_suffix(tmp_path):
    (tmp_path / "s.foo").write_text("x")
    assert_error(tmp_path / "s.foo", "s.foo", "unknown format '.foo'", ".xyz, .extxyz, .cif, .csv")


def test_csv_without_cif_column(tmp_path):
    path = write_csv(tmp_path / "nocif.csv", [{"material_id": "mp-1", "x": "1"}], ["material_id", "x"])
    assert_error(path, "nocif.csv", "no 'cif' column")


def test_unknown_element_in_xyz(tmp_path):
    path = tmp_path / "xx.xyz"
    path.write_text("1\n\nH 0 0 0\n2\n\nXx 0 0 0\nH 0 0 1\n")
    assert_error(path, "xx.xyz", "frame 1", "unknown element 'Xx'")


def test_unknown_element_in_csv(tmp_path):
    good, bad = cif_text(bulk("Cu")), cif_text(bulk("Si")).replace("Si", "Xx")
    path = write_csv(
        tmp_path / "bad.csv",
        [{"material_id": "mp-30", "cif": good}, {"material_id": "mp-x", "cif": bad}],
        ["material_id", "cif"],
    )
    assert_error(path, "bad.csv", "row 1 (material_id mp-x)", "unknown element 'Xx'")


def test_element_beyond_plutonium(tmp_path):
    path = tmp_path / "am.cif"
    path.write_text(cif_text(bulk("Cu")).replace("Cu", "Am"))
    assert_error(path, "am.cif", "block 0 (data_Am)", "unknown element", "atomic number 95")


def test_unreadable_cif_record(tmp_path):
    path = write_csv(tmp_path / "garbled.csv", [{"material_id": "mp-1", "cif": "data_x\nnonsense\n"}])
    assert_error(path, "garbled.csv", "row 0 (material_id mp-1)", "unreadable record", "No structure parsed")


def test_nan_position(tmp_path):
    path = tmp_path / "nan.xyz"
    path.write_text("2\n\nH nan 0 0\nH 0 0 1\n")
    assert_error(path, "nan.xyz", "frame 0", "NaN", "atom 0")


# --- bad structures ------------------------------------------------------------


def test_overlapping_atoms_in_molecule(tmp_path):
    path = tmp_path / "close.xyz"
    write(path, Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.3]]), format="extxyz")
    assert_error(path, "close.xyz", "frame 0", "overlapping atoms", "atoms 0 and 1", "0.300")


def test_overlap_across_periodic_boundary(tmp_path):
    crystal = Atoms("Cu2", positions=[[0.1, 1, 1], [2.9, 1, 1]], cell=np.eye(3) * 3, pbc=True)
    path = tmp_path / "wrap.xyz"
    write(path, crystal, format="extxyz")
    assert_error(path, "wrap.xyz", "frame 0", "overlapping atoms", "atoms 0 and 1", "0.200")
    # the same atoms without periodicity are far apart
    assert len(read_structures(Atoms("Cu2", positions=crystal.positions))) == 1


def test_overlap_with_own_image():
    thin = Atoms("H", cell=[0.4, 3, 3], pbc=True)
    assert_error(thin, "<Atoms #0>", "atom 0 and its own periodic image")


def test_min_distance_is_configurable():
    pair = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])
    assert len(read_structures(pair)) == 1
    with pytest.raises(StructureError, match="overlapping"):
        read_structures(pair, min_distance=1.0)


def test_partially_periodic():
    slab = Atoms("H", cell=np.eye(3) * 3, pbc=[True, True, False])
    assert_error(slab, "<Atoms #0>", "partially periodic structures are not supported")
    with pytest.raises(StructureError, match="partially periodic"):
        is_periodic(slab)


def test_periodic_without_cell():
    assert_error([molecule("H2O"), Atoms("H", pbc=True)], "<Atoms #1>", "periodic structure without a cell")


def test_validate_structure_prefixes_where():
    with pytest.raises(StructureError, match=r"^here: no atoms$"):
        validate_structure(Atoms(), "here")
    validate_structure(bulk("Si"), "there")
