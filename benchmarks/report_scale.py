"""The HTML report of a large search: time to write it, its size, time to open it in Chromium.

Builds (once, resumably) run databases of ``--n`` crystal structures spread over ``--runs``
compositions of the paper's MP-20 test set, written through the run store as ``respmatch
generate`` writes them: random cells varied from 50 of the search's own starts per composition
(``crystal_start``), a pseudo-energy, convergence flag and step count drawn per structure.  Beside each run it writes a
crystal judge's JSON in the schema of ``respmatch evaluate --json`` with drawn verdicts (space
group, validity, match): judging 10⁵ random cells with StructureMatcher would take hours and
measures the judge, not the report.  Then it writes the report and opens it in headless
Chromium, and prints one table.  Also measures the demo's report when given ``--demo DIR``.

    python benchmarks/report_scale.py --out benchmarks/out/report_scale --n 100000 --runs 10
    python benchmarks/report_scale.py --demo respmatch-demo     # the demo's report.html only
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers
from ase.formula import Formula

from respmatch.record import Record
from respmatch.reporting import browser, report
from respmatch.reporting.runs import read_database
from respmatch.search.starts import crystal_start, start_rng
from respmatch.store import RunStore

COMPOSITIONS = (  # the paper's 15 MP-20 test compositions
    "Co2Sb2", "Sr2O4", "AlAg4", "YMg3", "Cr4Si4", "Sn4Pd4", "Ag6O2", "Co4B2", "Ba2Cd6", "Bi2F8",
    "KZnF3", "Cr3CuO8", "Bi4S4Cl4", "Si2C4N8", "Hg2S2O8",
)
VOLUME_PER_ATOM = 15.0  # Å³, typical of MP-20
BASES = 50  # random starts per composition that the structures vary
SPACE_GROUPS = [("P1", 1), ("P-1", 2), ("C2/m", 12), ("Pnma", 62), ("P6_3/mmc", 194), ("Fm-3m", 225)]


def varied(atoms, rng: np.random.Generator):
    """A copy with its cell strained by up to 5% and its atoms moved by ~0.1 Å: a distinct
    structure at the cost of a few array operations (a start of its own costs 7 ms)."""
    atoms = atoms.copy()
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))), scale_atoms=True)
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    return atoms


def build_run(path: Path, composition: str, n: int, seed: int, model: str | None) -> Path:
    """Write ``n`` structures of ``composition`` through the run store (resumes a partial run)."""
    numbers = sorted(atomic_numbers[s] for s, k in Formula(composition).count().items() for _ in range(k))
    parameters = {"composition": composition, "preset": "crystal", "seed": seed, "n": n, "model": model}
    rng = np.random.default_rng(seed)
    level = rng.normal(-0.3, 0.1)
    bases = [crystal_start(numbers, VOLUME_PER_ATOM * len(numbers), start_rng(seed, k)) for k in range(BASES)]
    with RunStore(path, parameters, resume=True) as store:
        done = store.done_indices()
        for chunk in range(0, n, 1000):  # one transaction per 1000 rows, as a cluster's chunk
            items = []
            for index in range(chunk, min(chunk + 1000, n)):
                energy, converged = level + rng.gamma(2.0, 0.05), rng.random() < 0.9
                record = Record(index, seed, energy, converged, int(rng.integers(30, 2100)),
                                "full-cell" if converged else "constant-volume")
                if index not in done:
                    items.append((varied(bases[index % len(bases)], rng), record, None))
            store.write_many(items)
    return path


def write_judgement(run: Path, out: Path, seed: int) -> Path:
    """A crystal judge's JSON for the run, verdicts drawn (see the module's docstring)."""
    rng = np.random.default_rng(seed + 1)
    records = []
    for row in read_database(run).rows:  # summaries only: building 10⁴ Atoms takes minutes
        valid = bool(rng.random() < 0.95)
        symbol, number = SPACE_GROUPS[rng.integers(len(SPACE_GROUPS))] if valid else (None, None)
        matched = valid and bool(rng.random() < 0.05)
        records.append({
            "index": row["index"], "composition": row["composition"], "formula": row["composition"],
            "valid": valid, "min_distance": 1.2, "spacegroup": symbol, "spacegroup_number": number,
            "converged": row["converged"], "pseudo_energy_per_atom": row["energy"],
            "matched": matched, "rms": float(rng.random() * 0.3) if matched else None,
        })
    n, valid = len(records), sum(r["valid"] for r in records)
    summary = {"n": n, "compositions": 1, "valid": valid / n, "matched": sum(r["matched"] for r in records) / n}
    groups = {records[0]["formula"]: {"tries": n, "valid": valid}}
    out.write_text(json.dumps({"kind": "crystal", "summary": summary, "groups": groups, "records": records}))
    return out


def measure_load(path: Path, repeats: int) -> dict:
    """Seconds from navigation to a ready page (median of ``repeats`` fresh loads), and the time
    to sort the whole table by Ẽ."""
    driver = browser.start()
    try:
        loads = [browser.open_report(driver, path, timeout=300) for _ in range(repeats)]
        sort_ms = driver.execute_script(
            "const t = performance.now(); document.querySelector('#structure-table th[data-key=energy]').click();"
            "return performance.now() - t"
        )
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    return {"load_s": sorted(loads)[len(loads) // 2], "loads_s": loads, "sort_ms": sort_ms, "console_errors": len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "report_scale")
    parser.add_argument("--n", type=int, default=100_000, help="structures in all")
    parser.add_argument("--runs", type=int, default=10, help="compositions, one run database each")
    parser.add_argument("--structures", type=int, default=50, help="coordinates embedded per composition")
    parser.add_argument("--model", help="checkpoint the runs name (for the model card)")
    parser.add_argument("--repeats", type=int, default=3, help="page loads to time")
    parser.add_argument("--demo", type=Path, help="only measure DIR/report.html (from respmatch demo)")
    args = parser.parse_args()

    if args.demo:
        page = args.demo / "report.html"
        result = {"structures": "demo", "write_s": None}
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        runs, judgements = [], []
        for k, composition in enumerate(COMPOSITIONS[: args.runs]):
            run = build_run(args.out / f"{composition}.db", composition, args.n // args.runs, k, args.model)
            judgement = args.out / f"{composition}.json"
            if not judgement.exists():
                write_judgement(run, judgement, k)
            runs.append(run)
            judgements.append(judgement)
        print(f"runs ready in {time.perf_counter() - started:.0f} s")
        page = args.out / "report.html"
        started = time.perf_counter()
        report(runs, page, evaluation=judgements, structures=args.structures)
        result = {"structures": args.n, "write_s": round(time.perf_counter() - started, 1)}
    result["size_mb"] = round(page.stat().st_size / 1e6, 2)
    result.update(measure_load(page, args.repeats))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
