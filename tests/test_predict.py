"""``respmatch predict``: the funnel on a tiny diamond model, its stored stages and their resume,
the outputs (table, CIFs, report), bad input, and the real SevenNet-0 path once.

The physics is a stand-in where SevenNet-0 would be too slow: a second copy of the trained
diamond model, driven through the same batched relaxer and stage code (a ``Potential``, as the
universal potentials are).  One test runs SevenNet-0 itself on a 2-atom cell."""

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read
from pymatgen.core.structure_matcher import StructureMatcher

import respmatch
from respmatch.cli import main
from respmatch.errors import RespmatchError
from respmatch.matching import ENERGY_WINDOW, MATCHER_TOLERANCES, to_structure
from respmatch.predict import groups as grouping
from respmatch.predict import physics, pipeline
from respmatch.predict.output import COLUMNS, ranking_table
from respmatch.predict.settings import PredictSettings
from respmatch.predict.shortlist import shortlist
from respmatch.recheck import potentials
from respmatch.predict.records import STAGES, Distinct, Ranking, Relaxation, Shortlist, StageTime, candidate
from respmatch.run import open_run

SMALL = PredictSettings(tries=12, keep=4, relax=2, screen_steps=10, max_steps=100, symmetry=0.5)


@pytest.fixture
def standin(monkeypatch, trained_diamond):
    """The physics stage's potential: a fresh copy of the diamond model (the relaxer moves it to
    float64 in place, so never the session's own)."""
    path, _ = trained_diamond
    model = respmatch.load_model(path)
    monkeypatch.setattr(physics, "batched_potential", lambda name, compiled=False: model)
    return path


def run(path, out, **options):
    return respmatch.predict(["C2"], path, out, settings=options.pop("settings", SMALL), progress=False, **options)


def is_diamond(atoms) -> bool:
    return StructureMatcher(**MATCHER_TOLERANCES).fit(to_structure(atoms), to_structure(bulk("C", "diamond", a=3.567)))


def test_shortlist_scores_order_groups_as_documented():
    groups = [{"energy": 0.0, "count": 1}, {"energy": 0.01, "count": 9}, {"energy": 0.05, "count": 3},
              {"energy": 0.3, "count": 20}]
    assert shortlist(groups, 2, "energy") == [0, 1]
    assert shortlist(groups, 2, "count") == [3, 1]
    assert shortlist(groups, 3, "mixed") == [0, 3, 1]  # lowest Ẽ and most found in turn
    assert shortlist(groups, 1, "basin") == [1]  # 0.01 - 0.02 ln 9 < 0.0
    assert shortlist(groups, 10, "energy") == [0, 1, 2, 3]  # fewer groups than K: all of them
    with pytest.raises(RespmatchError, match="unknown shortlist score"):
        shortlist(groups, 2, "best")


def test_funnel_finds_diamond_and_writes_table_cifs_and_report(standin, tmp_path):
    result = run(standin, tmp_path / "run.db", cif_dir=tmp_path / "cifs", report=tmp_path / "report.html")
    (ranking,) = result["rankings"].values()
    counts = result["funnel"]["C2"]
    assert counts["tries"] == 12 and counts["groups"] >= 1 and counts["shortlisted"] <= 4
    assert counts["relaxed"] == min(2, counts["shortlisted"]) and counts["final"] == len(ranking) >= 1
    energies = [entry["energy_per_atom"] for entry in ranking]
    assert energies == sorted(energies) and ranking[0]["above_lowest"] == 0
    assert sum(entry["relaxed_into"] for entry in ranking) == counts["relaxed"]
    assert all(entry["found"] >= 1 for entry in ranking)
    # The table: the columns, one row per ranked structure.
    lines = result["table"].splitlines()
    ties = sum(entry["above_lowest"] <= 0.01 for entry in ranking) > 1
    assert lines[1].split("  ") == list(COLUMNS) and len(lines) == 2 + len(ranking) + ties
    # One CIF per ranked structure, FORMULA/RANK.cif, rank 1 the lowest energy: diamond.
    files = sorted(p.relative_to(tmp_path / "cifs").as_posix() for p in (tmp_path / "cifs").rglob("*"))
    assert files == ["C2"] + [f"C2/{rank}.cif" for rank in range(1, len(ranking) + 1)]
    first = read(tmp_path / "cifs" / "C2" / "1.cif")
    assert first.get_chemical_formula() == "C2" and is_diamond(first)
    assert all(entry["space_group"].endswith(")") for entry in ranking)  # spglib's "SYMBOL (NUMBER)"
    page = (tmp_path / "report.html").read_text()
    assert 'id="funnel"' in page and "C2: final ranking" in page and "where the time went" in page


def test_a_killed_run_resumes_without_repeating_any_stage(standin, tmp_path, monkeypatch):
    whole = run(standin, tmp_path / "whole.db")

    original = grouping.final_ranking
    monkeypatch.setattr(grouping, "final_ranking", lambda candidates: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(standin, tmp_path / "run.db")
    monkeypatch.setattr(grouping, "final_ranking", original)

    calls = {"search": 0, "distinct": 0, "relax": 0}

    def counting(name, function):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(pipeline, "relaxed", counting("search", pipeline.relaxed))
    monkeypatch.setattr(grouping, "distinct_tries", counting("distinct", grouping.distinct_tries))
    monkeypatch.setattr(pipeline, "relax_candidates", counting("relax", pipeline.relax_candidates))
    with pytest.raises(FileExistsError, match="--resume"):
        run(standin, tmp_path / "run.db")
    resumed = run(standin, tmp_path / "run.db", resume=True)
    assert calls == {"search": 0, "distinct": 0, "relax": 0}
    assert resumed["rankings"] == whole["rankings"]
    # and a resume of a finished run only reads it back
    assert run(standin, tmp_path / "run.db", resume=True)["table"] == resumed["table"]
    with pytest.raises(RespmatchError, match="cannot resume"):
        run(standin, tmp_path / "run.db", resume=True, settings=PredictSettings(tries=12, keep=3, relax=2))


def test_a_run_killed_during_the_physics_relaxes_only_what_is_missing(standin, tmp_path, monkeypatch):
    original = pipeline.relax_candidates

    def dies_after_one(items, settings, client=None):
        yield next(original(items, settings, client))
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "relax_candidates", dies_after_one)
    with pytest.raises(KeyboardInterrupt):
        run(standin, tmp_path / "run.db")
    stored = open_run(tmp_path / "run.db").stages
    assert len(stored.records("screen", Relaxation)) == 1 and not stored.records("relax", Relaxation)
    relaxed = []

    def counting(items, settings, client=None):
        relaxed.extend(key for key, _ in items)
        return original(items, settings, client)

    monkeypatch.setattr(pipeline, "relax_candidates", counting)
    result = run(standin, tmp_path / "run.db", resume=True)
    counts = result["funnel"]["C2"]
    assert len(relaxed) == counts["shortlisted"] - 1 + counts["relaxed"]


def test_a_run_stopped_before_the_ranking_keeps_typed_records_and_refuses_other_stage_settings(
    standin, tmp_path, monkeypatch, capsys
):
    """Stopped in the last stage: the stages before it are whole in the run as typed records; a
    resume under other stage settings (the grouping's energy window) is refused in one line and
    leaves the file as it was; the resume under the same settings ranks from the stored records."""
    out = tmp_path / "run.db"
    original = grouping.final_ranking
    monkeypatch.setattr(grouping, "final_ranking", lambda candidates: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run(standin, out)
    monkeypatch.setattr(grouping, "final_ranking", original)

    stages = open_run(out).stages
    assert [s for s in STAGES if stages.finished(s)] == ["distinct", "shortlist", "screen", "relax"]
    groups = stages.records("distinct", Distinct)["C2"].groups
    assert 1 <= len(groups) and sum(g["count"] for g in groups) <= 12
    short = stages.records("shortlist", Shortlist)["C2"].groups
    assert short == shortlist(groups, 4, SMALL.score)
    screened, relaxed = stages.records("screen", Relaxation), stages.records("relax", Relaxation)
    assert set(screened) == {candidate("C2", g) for g in short} and set(relaxed) <= set(screened)
    assert len(relaxed) == min(2, len(short))
    assert all(r.atoms().get_chemical_formula() == "C2" and np.isfinite(r.energy_per_atom) for r in relaxed.values())
    assert stages.records("final", Ranking) == {}
    spent = stages.records("time", StageTime)
    assert set(spent) == set(STAGES) and all(t.wall_s > 0 for t in spent.values())  # "final" ran until stopped

    before = out.read_bytes()
    monkeypatch.setattr(pipeline, "ENERGY_WINDOW", 0.05)
    cli = ["predict", "C2", "--model", str(standin), "--out", str(out), "--tries", "12", "--keep", "4", "--relax", "2",
           "--screen-steps", "10", "--max-steps", "100", "--quiet", "--resume"]
    assert main(cli) == 2
    error = capsys.readouterr().err.strip()
    assert error.endswith("stage 'distinct' was run with other settings (energy_window); use another --out")
    assert len(error.splitlines()) == 1 and out.read_bytes() == before
    monkeypatch.setattr(pipeline, "ENERGY_WINDOW", ENERGY_WINDOW)
    monkeypatch.setattr(pipeline, "relax_candidates", lambda *args, **kwargs: pytest.fail("relaxed again"))
    assert main(cli) == 0
    ranking = open_run(out).stages.records("final", Ranking)["C2"].structures
    assert ranking and sum(entry["relaxed_into"] for entry in ranking) == len(relaxed)
    assert "C2: 12 tries" in capsys.readouterr().out


def test_near_degenerate_ranks_are_called_a_tie():
    entry = {"space_group": "P1 (1)", "found": 1, "pseudo_energy_per_atom": 0.1, "relaxed_into": 1, "converged": True}
    ranking = [{**entry, "energy_per_atom": -5.0, "above_lowest": 0.0},
               {**entry, "energy_per_atom": -4.995, "above_lowest": 0.005},
               {**entry, "energy_per_atom": -4.9, "above_lowest": 0.1}]
    counts = {"X": {"tries": 3, "converged": 3, "groups": 3, "shortlisted": 3, "relaxed": 3, "final": 3}}
    table = ranking_table({"X": ranking}, counts)
    assert table.splitlines()[-1].strip().startswith("ranks 1-2 lie within 10 meV/atom")
    assert "lie within" not in ranking_table({"X": ranking[::2]}, counts)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["SiO2"], "not trained on element"),
        (["C2", "--potential", "mace"], "unknown potential"),
        (["C2", "--potential", "gfn2-xtb"], "for molecules"),
        (["C2", "--tries", "5", "--keep", "6"], "cannot shortlist 6"),
        (["C2", "--keep", "2", "--relax", "3"], "relax at most keep"),
    ],
)
def test_bad_input_is_one_line_before_any_work(arguments, message, trained_diamond, tmp_path, capsys):
    out = tmp_path / "run.db"
    assert main(["predict", *arguments, "--model", str(trained_diamond[0]), "--out", str(out), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1
    assert not out.exists()


def test_an_element_the_potential_does_not_cover_is_refused(trained_diamond, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(potentials, "covered_elements", lambda name: frozenset({1, 8}))
    out = tmp_path / "run.db"
    assert main(["predict", "C2", "--model", str(trained_diamond[0]), "--out", str(out)]) == 2
    assert "C2: potential sevennet-0 does not cover element(s) C" in capsys.readouterr().err
    assert not out.exists()


def test_cli_prints_the_ranked_table(standin, tmp_path, capsys):
    code = main(["predict", "C2", "--model", str(standin), "--out", str(tmp_path / "run.db"), "--tries", "8",
                 "--keep", "3", "--relax", "1", "--screen-steps", "5", "--quiet", "--cif-dir", str(tmp_path / "c")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "C2: 8 tries" in printed and "  ".join(COLUMNS) in printed and "time: search" in printed
    assert (tmp_path / "c" / "C2" / "1.cif").is_file()


def test_sevennet_relaxes_the_shortlist_of_a_real_run(trained_diamond, tmp_path):
    """The real potential through the whole funnel, once: diamond at SevenNet-0's energy."""
    settings = PredictSettings(tries=4, keep=2, relax=1, screen_steps=5, max_steps=60)
    result = respmatch.predict("C2", trained_diamond[0], tmp_path / "run.db", settings=settings, progress=False,
                               physics_batch_size=2)
    first = result["rankings"]["C2"][0]
    # SevenNet-0 (PBE) puts diamond near -9.1 eV/atom; a relaxed carbon cell lies within ~1 eV/atom.
    assert -10.5 < first["energy_per_atom"] < -7.5
    assert np.isfinite(first["pseudo_energy_per_atom"])
