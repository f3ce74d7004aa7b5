"""The report: CSV/Markdown/CTTC tables, escaping, combined runs, and the page in a real browser."""

import csv
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_cli
from fcmbench.evaluation.metrics import bd_rate
from fcmbench.pipeline.store import ItemResult, Store, image_set_key

EVIL = "<script>alert(1)</script>"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ANCHOR = [(0.02, 0.20), (0.05, 0.30), (0.1, 0.36), (0.2, 0.39), (0.4, 0.40)]
TEST = [(0.015, 0.21), (0.035, 0.31), (0.07, 0.365), (0.15, 0.392), (0.3, 0.401)]


def make_results(folder: Path, curves: dict[str, list[tuple[float, float]]]) -> None:
    """A results store filled through the store's own API, with known rates and accuracies."""
    store = Store(folder)
    setup = store.add_setup("shapes", "shapes_rcnn", {"dataset": "shapes"})
    store.add_run(setup, {"command": f"fcmbench run --methods {EVIL}", "versions": {"fcmbench": "test"},
                          "task_model": "shapes_rcnn", "weights": "abc", "dataset": "shapes", "images": 1,
                          "device": "cpu", "methods": {m: m for m in curves}, "warnings": []})
    pixels = 10_000
    for method, points in curves.items():
        for k, (rate, acc) in enumerate(points):
            size = int(rate * pixels / 8)
            levels = {"0": size // 2, "1": size // 4, "2": size // 8}
            levels["_header"] = size - sum(levels.values())
            store.add_item(setup, ItemResult(method, f"q{k}", 1, k, pixels, size, levels, 0.01, 0.02, 0.1, 0.1, []))
            store.add_evaluation(setup, method, f"q{k}", image_set_key([1]), k, 1, 8 * size, pixels,
                                 {"bbox_mAP": acc, "bbox_mAP50": min(1.0, acc * 1.5)})
    store.close()


@pytest.fixture
def report_dir(tmp_path) -> Path:
    make_results(tmp_path / "run", {"anchor": ANCHOR, EVIL: TEST})
    run_cli("report", "--out", tmp_path / "run", "--anchor", "anchor")
    return tmp_path / "run"


def test_tables_and_escaping(report_dir):
    html = (report_dir / "report.html").read_text()
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # self-contained: nothing fetched
    assert "<link" not in html
    with open(report_dir / "bd_rate.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    with open(report_dir / "rd.csv") as handle:
        rd = list(csv.DictReader(handle))
    curve = {m: ([float(r["bpp"]) for r in rd if r["method"] == m],
                 [float(r["bbox_mAP"]) for r in rd if r["method"] == m]) for m in ("anchor", EVIL)}
    expected = bd_rate(*curve["anchor"], *curve[EVIL])
    assert expected < -20
    assert float(row["bd_rate_pct"]) == pytest.approx(expected, abs=1e-3)
    assert row["anchor_points"] == "q0 q1 q2 q3 q4"
    with open(report_dir / "cttc.csv") as handle:
        cttc = list(csv.DictReader(handle))
    anchor_rows = [r for r in cttc if r["Method"] == "anchor"]
    assert [float(r["mAP (%)"]) for r in anchor_rows] == pytest.approx([100 * a for _, a in ANCHOR])
    markdown = (report_dir / "report.md").read_text()
    assert "| anchor" in markdown and f"{expected:+.2f}" in markdown


def test_several_runs_combine(tmp_path):
    make_results(tmp_path / "a", {"anchor": ANCHOR})
    make_results(tmp_path / "b", {"other": TEST})
    run_cli("report", "--out", tmp_path / "combined", tmp_path / "a", tmp_path / "b", "--anchor", "anchor")
    with open(tmp_path / "combined" / "bd_rate.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["method"] == "other" and float(row["bd_rate_pct"]) < 0


def test_a_published_table_joins_the_stored_setup_and_yields_to_its_methods(tmp_path):
    make_results(tmp_path / "earlier", {"anchor": ANCHOR, "other": TEST})
    run_cli("report", "--out", tmp_path / "earlier", "--anchor", "anchor")
    # a rerun with one point fewer: all of the table's anchor points give way to it, not only those it repeats
    rerun_anchor = [(rate, acc + 0.01) for rate, acc in ANCHOR[:-1]]
    make_results(tmp_path / "now", {"anchor": rerun_anchor})
    run_cli("report", "--out", tmp_path / "combined", tmp_path / "now", tmp_path / "earlier" / "rd.csv",
            "--anchor", "anchor")
    rd = pd.read_csv(tmp_path / "combined" / "rd.csv")
    assert sorted(rd[rd["method"] == "anchor"]["bbox_mAP"]) == pytest.approx([acc for _, acc in rerun_anchor])
    assert len(rd[rd["method"] == "other"]) == len(TEST)
    (row,) = pd.read_csv(tmp_path / "combined" / "bd_rate.csv").to_dict("records")
    curves = [(rd[rd["method"] == m]["bpp"], rd[rd["method"] == m]["bbox_mAP"]) for m in ("anchor", "other")]
    expected = bd_rate(*curves[0], *curves[1])
    assert row["method"] == "other" and row["bd_rate_pct"] == pytest.approx(expected, abs=1e-3)
    levels = pd.read_csv(tmp_path / "combined" / "levels.csv").astype({"rate": str})  # the table's levels.csv too
    assert set(levels[levels["method"] == "other"]["rate"]) == {f"q{k}" for k in range(len(TEST))}
    assert set(levels[levels["method"] == "anchor"]["rate"]) == {f"q{k}" for k in range(len(rerun_anchor))}
    html = (tmp_path / "combined" / "report.html").read_text()
    assert "Points from published tables" in html and "earlier/rd.csv</th><td class=\"text\">other<" in html


@pytest.mark.parametrize("content, complaint", [(None, "does not exist"),
                                                ("method,rate\nx,q1\n", "lacks the column(s) dataset")])
def test_a_bad_published_table_is_named(tmp_path, content, complaint):
    make_results(tmp_path / "now", {"anchor": ANCHOR})
    table = tmp_path / "old.csv"
    if content is not None:
        table.write_text(content)
    result = run_cli("report", "--out", tmp_path / "out", tmp_path / "now", table, check=False)
    assert result.returncode == 2 and str(table) in result.stderr and complaint in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_levels_table_beside_a_published_table_is_named(tmp_path):
    make_results(tmp_path / "earlier", {"other": TEST})
    run_cli("report", "--out", tmp_path / "earlier")
    (tmp_path / "earlier" / "levels.csv").write_text("method\nother\n")
    make_results(tmp_path / "now", {"anchor": ANCHOR})
    result = run_cli("report", "--out", tmp_path / "out", tmp_path / "now", tmp_path / "earlier" / "rd.csv",
                     check=False)
    assert result.returncode == 2 and "levels.csv" in result.stderr and "lacks the column(s) rate" in result.stderr
    assert not (tmp_path / "out").exists()


def test_short_or_flat_curves_give_reasons(tmp_path):
    make_results(tmp_path / "r", {"anchor": ANCHOR, "short": TEST[:3], "flat": [(r, 0.3) for r, _ in TEST]})
    run_cli("report", "--out", tmp_path / "r", "--anchor", "anchor", "--bd-method", "cubic")
    with open(tmp_path / "r" / "bd_rate.csv") as handle:
        notes = {row["method"]: row["note"] for row in csv.DictReader(handle)}
    assert "at least 4" in notes["short"] and "not monotone" in notes["flat"]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_report_in_headless_chromium(report_dir):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors = []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto((report_dir / "report.html").as_uri())
        sizes = page.eval_on_selector_all("figure svg", "els => els.map(e => [e.getBoundingClientRect().width, "
                                          "e.getBoundingClientRect().height])")
        cells = page.eval_on_selector_all("#bd-table td.bd", "els => els.map(e => e.textContent)")
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert len(sizes) == 4  # two RD plots (box mAP, mAP50), two per-level plots
    assert all(w > 100 and h > 100 for w, h in sizes)
    assert len(cells) == 1 and cells[0].endswith("%") and float(cells[0].split()[0]) < -20


def test_monotone_fit_on_request(tmp_path):
    bumpy = [(0.015, 0.21), (0.035, 0.31), (0.05, 0.30), (0.07, 0.365), (0.15, 0.392), (0.3, 0.401)]
    make_results(tmp_path / "r", {"anchor": ANCHOR, "bumpy": bumpy})
    run_cli("report", "--out", tmp_path / "r", "--anchor", "anchor")
    with open(tmp_path / "r" / "bd_rate.csv") as handle:
        assert "not monotone" in next(csv.DictReader(handle))["note"]
    run_cli("report", "--out", tmp_path / "r", "--anchor", "anchor", "--monotone")
    with open(tmp_path / "r" / "bd_rate.csv") as handle:
        row = next(csv.DictReader(handle))
    assert row["note"] == "monotone fit dropped q2" and float(row["bd_rate_pct"]) < 0
    assert row["test_points"] == "q0 q1 q3 q4 q5"


def test_mfiba_is_also_measured_against_its_own_base(tmp_path):
    make_results(tmp_path / "r", {"anchor": ANCHOR, "elic-feat": ANCHOR, "mfiba-elic": TEST})
    run_cli("report", "--out", tmp_path / "r", "--anchor", "anchor")
    with open(tmp_path / "r" / "bd_rate.csv") as handle:
        rows = {(r["method"], r["anchor"]): r for r in csv.DictReader(handle)}
    assert set(rows) == {("elic-feat", "anchor"), ("mfiba-elic", "anchor"), ("mfiba-elic", "elic-feat")}
    # its base has the anchor's very curve, so the two BD-rates agree (and are real numbers)
    assert float(rows["mfiba-elic", "elic-feat"]["bd_rate_pct"]) == float(rows["mfiba-elic", "anchor"]["bd_rate_pct"])
    assert float(rows["mfiba-elic", "elic-feat"]["bd_rate_pct"]) < -20


def test_levels_csv_records_the_chosen_qualities(tmp_path):
    store = Store(tmp_path / "r")
    setup = store.add_setup("shapes", "shapes_rcnn", {"dataset": "shapes"})
    store.add_run(setup, {"command": "fcmbench run", "versions": {}, "task_model": "shapes_rcnn", "weights": "w",
                          "dataset": "shapes", "images": 2, "device": "cpu", "methods": {}, "warnings": []})
    for image, chosen in ((1, {"0": 3, "1": 1}), (2, {"0": 2, "1": 1})):
        store.add_item(setup, ItemResult("mfiba-elic", "lam5", image, 5.0, 100, 30, {"0": 20, "1": 5, "_header": 5},
                                         0.1, 0.1, 0.1, 0.1, [], {"qualities": chosen}))
    store.add_evaluation(setup, "mfiba-elic", "lam5", image_set_key([1, 2]), 5.0, 2, 480, 200, {"bbox_mAP": 0.5})
    store.close()
    run_cli("report", "--out", tmp_path / "r")
    with open(tmp_path / "r" / "levels.csv") as handle:
        levels = {r["level"]: r for r in csv.DictReader(handle)}
    assert float(levels["0"]["quality"]) == 2.5 and float(levels["1"]["quality"]) == 1.0
    assert levels["header"]["quality"] == ""
    assert "mean base quality per level" in (tmp_path / "r" / "report.html").read_text()


def test_tables_wider_than_the_console_are_wrapped_never_cut(tmp_path):
    import io

    from rich.console import Console

    from fcmbench.reports.tables import print_tables, rd_table

    make_results(tmp_path / "run", {"a-method-with-a-long-name": ANCHOR})
    rd = rd_table([tmp_path / "run"])
    for width, wrapped in ((200, False), (40, True)):
        text = io.StringIO()
        assert print_tables(rd, None, Console(file=text, width=width)) is wrapped
        rows = [line.strip("│").split("│") for line in text.getvalue().splitlines() if line.startswith("│")]
        columns = ["".join(piece.strip() for piece in column) for column in zip(*rows, strict=True)]
        assert "…" not in text.getvalue()  # rich's mark of a cut cell
        assert "a-method-with-a-long-name" * 5 == columns[0] and "0.3900" in columns[4]  # read across the folds
    piped = run_cli("report", "--out", tmp_path / "run")  # not a terminal: 160 columns
    assert "wider than this console" not in piped.stdout
    long_name = "m" * 170
    make_results(tmp_path / "long", {long_name: ANCHOR})
    piped = run_cli("report", "--out", tmp_path / "long")
    assert "wider than this console (160 columns)" in piped.stdout and "report.md" in piped.stdout
    assert long_name in (tmp_path / "long" / "report.md").read_text()
