"""What a prediction hands the user: the ranked table and one CIF per ranked structure."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ase import Atoms
from ase.io import write

from respmatch.files import atomic_path

# eV/atom: SevenNet-0 put a wrong polymorph up to 10 meV/atom below the right one, both relaxations
# converged, and a second potential did not settle it (docs/results.md, "Predict: the funnel").
TIE = 0.01
COLUMNS = ("rank", "E/atom (eV)", "E above lowest (eV/atom)", "space group", "found by", "Ẽ/atom (eV)", "relaxed into")


def ranking_table(rankings: dict[str, list[dict]], counts: dict[str, dict]) -> str:
    """Per formula: the funnel in one line, then the ranked distinct structures."""
    lines = []
    for formula, ranking in rankings.items():
        c = counts[formula]
        lines += [
            f"{formula}: {c['tries']} tries, {c['converged']} converged, {c['groups']} distinct, "
            f"{c['shortlisted']} shortlisted, {c['relaxed']} relaxed -> {c['final']} distinct",
            "  ".join(COLUMNS),
        ]
        for rank, entry in enumerate(ranking, 1):
            unconverged = "" if entry["converged"] else "  (relaxation not converged)"
            lines.append(
                f"{rank:>4}  {entry['energy_per_atom']:>11.4f}  {entry['above_lowest']:>24.4f}  "
                f"{entry['space_group']:<11}  {entry['found']:>8}  {entry['pseudo_energy_per_atom']:>11.4f}  "
                f"{entry['relaxed_into']:>12}{unconverged}"
            )
        if not ranking:
            lines.append("  (no candidate could be relaxed)")
        ties = sum(entry["above_lowest"] <= TIE for entry in ranking)
        if ties > 1:
            lines.append(f"  ranks 1-{ties} lie within {TIE * 1000:.0f} meV/atom of each other: within the "
                         "potential's error between polymorphs, a tie")
        lines.append("")
    return "\n".join(lines).rstrip()


def ranked_paths(folder: str | Path, rankings: dict[str, list[dict]], suffix: str) -> Iterator[tuple[Path, str, int, dict]]:
    """(``folder/FORMULA/RANK.suffix``, formula, rank, entry) of every ranked entry (FORMULA as
    given, rank 1 the lowest energy), each formula's folder made."""
    for formula, ranking in rankings.items():
        target = Path(folder) / formula
        target.mkdir(parents=True, exist_ok=True)
        for rank, entry in enumerate(ranking, 1):
            yield target / f"{rank}.{suffix}", formula, rank, entry


def write_cifs(folder: str | Path, rankings: dict[str, list[dict]], structure: Callable[[str, dict], Atoms]) -> list[Path]:
    """``folder/FORMULA/RANK.cif`` for every ranked structure, each written whole or not at all;
    the paths written."""
    written = []
    for path, formula, _, entry in ranked_paths(folder, rankings, "cif"):
        with atomic_path(path) as temporary:
            write(temporary, structure(formula, entry), format="cif")
        written.append(path)
    return written
