"""The demo's HTML report in a real browser: Debian's headless Chromium driven by Selenium, and
the funnel section of a tiny prediction's report.

One browser session for the demo's report, one for the prediction's.  Skipped where no system Chromium is installed, except in CI
(``CI`` set), whose script installs it: there a missing browser fails.
"""

import io
import os
import time

import numpy as np
import pytest
from ase.io import read
from PIL import Image

import respmatch
from respmatch.demo import DemoSettings, run_demo
from respmatch.predict import physics
from respmatch.predict.settings import PredictSettings
from respmatch.reporting import browser
from respmatch.reporting.funnel import COUNT_COLUMNS

pytestmark = pytest.mark.skipif(
    browser.find_chromium() is None and not os.environ.get("CI"),
    reason="no system Chromium (apt-get install chromium chromium-driver)",
)

SIZES = (2, 4, 6, 8, 12)
TRIES = 40  # 200 structures, as the demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A demo-sized run (200 structures, short training and relaxation) and its report."""
    folder = tmp_path_factory.mktemp("demo")
    # Without the closing prediction: these checks count and click the carbon run's own rows.
    settings = DemoSettings(epochs=2, cell_sizes=SIZES, tries_per_size=TRIES, max_steps=10, batch_size=100,
                            predict_formula=None)
    run_demo(folder, settings, progress=False)
    return folder


@pytest.fixture(scope="module")
def page(demo, tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    driver = browser.start(downloads)
    try:
        browser.open_report(driver, demo / "report.html")
        yield driver, downloads
    finally:
        driver.quit()


def errors(driver) -> list:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def column(driver, name) -> list[str]:
    position = driver.execute_script(
        "return [...document.querySelectorAll('#structure-table th')].findIndex(th => th.dataset.key === arguments[0])",
        name,
    )
    return driver.execute_script(
        "return [...document.querySelectorAll('#structure-table tbody tr')].map(tr => tr.children[arguments[0]].textContent)",
        position,
    )


def ink(driver, element_id) -> int:
    """Pixels of an element that are not (near) white."""
    image = Image.open(io.BytesIO(driver.find_element("id", element_id).screenshot_as_png)).convert("L")
    return int((np.asarray(image) < 200).sum())


def test_loads_offline_without_errors_and_draws_the_plots(page):
    driver, _ = page
    assert errors(driver) == []
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0  # nothing fetched
    points = driver.execute_script(
        "return document.querySelectorAll('[data-figure=map] .scatterlayer .point').length"
    )
    assert points == len(SIZES) * TRIES
    assert driver.execute_script("return document.querySelectorAll('[data-figure=rates] .bars .point').length") > 0


def test_table_has_a_row_per_structure_and_sorts(page):
    driver, _ = page
    assert len(driver.find_elements("css selector", "#structure-table tbody tr")) == len(SIZES) * TRIES
    energies = [float(v) for v in column(driver, "energy")]
    assert energies == sorted(energies)  # the page opens sorted by Ẽ, lowest first
    header = driver.find_element("css selector", "#structure-table th[data-key=energy]")
    header.click()
    descending = [float(v) for v in column(driver, "energy")]
    assert descending == sorted(energies, reverse=True) and descending != energies
    driver.find_element("css selector", "#structure-table th[data-key=natoms]").click()
    atoms = [int(v) for v in column(driver, "natoms")]
    assert atoms == sorted(atoms) and atoms[0] == 2 and atoms[-1] == 12
    driver.find_element("id", "filter-text").send_keys("C12")
    assert set(column(driver, "composition")) == {"C12"} and len(column(driver, "composition")) == TRIES
    driver.find_element("id", "filter-text").clear()
    driver.execute_script("document.getElementById('filter-text').dispatchEvent(new Event('input'))")
    assert len(column(driver, "index")) == len(SIZES) * TRIES
    assert errors(driver) == []


def test_a_click_shows_the_structure_and_its_cif_downloads(page, demo, tmp_path):
    driver, downloads = page
    driver.execute_script("document.getElementById('structures').scrollIntoView()")
    blank = ink(driver, "viewer")
    row = driver.find_element("css selector", "#structure-table tbody tr:nth-child(3)")
    composition, index = row.find_elements("css selector", "td")[1].text, int(row.find_elements("css selector", "td")[0].text)
    row.click()
    time.sleep(0.3)
    assert ink(driver, "viewer") > blank + 2000  # atoms, bonds and the cell drawn
    link = driver.find_element("id", "download")
    name = link.get_attribute("download")
    assert name == f"{composition}-demo-{index}.cif"
    link.click()
    target = downloads / name
    for _ in range(100):
        if target.exists() and target.stat().st_size:
            break
        time.sleep(0.05)
    back = read(target, format="cif")
    original = next(
        a for a in read(demo / "generated.extxyz", ":")
        if a.info["composition"] == composition and a.info["index"] == index
    )
    assert back.get_chemical_formula() == original.get_chemical_formula()
    assert back.cell.cellpar() == pytest.approx(original.cell.cellpar(), abs=1e-4)
    difference = back.get_scaled_positions() - original.get_scaled_positions()
    assert np.abs(difference - np.round(difference)).max() < 1e-5
    driver.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert errors(driver) == []


@pytest.fixture(scope="module")
def prediction(trained_diamond, tmp_path_factory):
    """A tiny prediction of C2 and its report; the physics is a copy of the diamond model standing in
    for SevenNet-0, as in tests/test_predict.py."""
    folder = tmp_path_factory.mktemp("predict")
    path, _ = trained_diamond
    standin = respmatch.load_model(path)
    settings = PredictSettings(tries=8, keep=3, relax=2, screen_steps=5, max_steps=50)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(physics, "batched_potential", lambda name, compiled=False: standin)
        result = respmatch.predict("C2", path, folder / "run.db", settings=settings, report=folder / "report.html",
                                   progress=False)
    return folder / "report.html", result


def funnel_table(driver, caption) -> list[list[str]]:
    """The body rows (cell texts) of the funnel section's table with this caption."""
    return driver.execute_script(
        "const table = [...document.querySelectorAll('#funnel table')].find(t => t.caption.textContent === arguments[0]);"
        "return table ? [...table.tBodies[0].rows].map(tr => [...tr.cells].map(td => td.textContent)) : null",
        caption,
    )


def test_the_funnel_section_shows_the_counts_the_time_and_the_ranking(prediction):
    report, result = prediction
    driver = browser.start()
    try:
        browser.open_report(driver, report)
        assert errors(driver) == []
        section = driver.find_element("id", "funnel")
        assert section.is_displayed() and section.size["height"] > 100
        assert driver.find_element("css selector", "nav a[href='#funnel']").is_displayed()
        counts = result["funnel"]["C2"]
        assert funnel_table(driver, "what each stage kept, per formula") == [["C2", *(str(counts[c]) for c in COUNT_COLUMNS)]]
        assert [row[0] for row in funnel_table(driver, "where the time went")] == [
            stage for stage, spent in result["time"].items() if spent
        ]
        ranking = result["rankings"]["C2"]
        rows = funnel_table(driver, "C2: final ranking")
        assert len(rows) == len(ranking) == counts["final"] >= 1
        assert [row[0] for row in rows] == [str(rank) for rank in range(1, len(ranking) + 1)]
        assert [float(row[1]) for row in rows] == pytest.approx([e["energy_per_atom"] for e in ranking], abs=1e-4)
        assert [row[3] for row in rows] == [e["space_group"] for e in ranking]
        assert errors(driver) == []
    finally:
        driver.quit()
