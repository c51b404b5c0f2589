"""The report: self-contained HTML with charts, JSON metrics, error rows shown; rendered in Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from curate.eval.metrics import summarize
from curate.eval.report import write_outputs
from curate.eval.run import EvalResult, error_rows

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]


def judged_frame(seed: int = 0) -> pl.DataFrame:
    """Two endpoints over the three set kinds in two languages, with a few failed calls of each stage."""
    rng = np.random.default_rng(seed)
    rows = []
    sets = (("deccp", "blocked", ["censored"]), ("harmbench", "harmbench", ["illegal", "cybercrime_intrusion"]),
            ("xstest", "xstest", ["homonyms", "contrast_homonyms"]))
    for endpoint, answer_p in (("base", 0.3), ("tuned", 0.8)):
        for set_name, kind, categories in sets:
            for i in range(6):
                category = categories[i % len(categories)]
                label = {"blocked": "blocked", "harmbench": "harmful"}.get(kind) or ("unsafe" if category.startswith("contrast") else "safe")
                for language in ("en", "zh"):
                    for sample in range(2):
                        failed = (i, sample, language) == (0, 1, "zh")
                        ok = not failed
                        rows.append({
                            "endpoint": endpoint, "set": set_name, "kind": kind, "item_id": f"{set_name}-{i}",
                            "language": language, "category": category, "label": label, "sample_index": sample,
                            "status": "ok" if ok else "error", "error_stage": None if ok else "generate",
                            "error": None if ok else "HTTP 503 from http://127.0.0.1:9/v1 after 2 retries",
                            "refused": bool(rng.random() > answer_p) if ok else None,
                            "satisfaction": int(rng.integers(0, 5)) if ok and kind == "blocked" else None,
                            "harmful": bool(rng.random() < answer_p / 3) if ok and kind == "harmbench" else None,
                            "refusal_error": None,
                            "satisfaction_error": "eval_satisfaction: no JSON object in judge reply" if ok and kind == "blocked" and i == 1 and sample == 0 else None,
                            "harm_error": None,
                        })
    df = pl.DataFrame(rows)
    return df.with_columns(satisfaction=pl.when(pl.col("satisfaction_error").is_null()).then(pl.col("satisfaction")))


def make_result() -> EvalResult:
    judged = judged_frame()
    meta = {"endpoints": {"base": {"model": "base-model", "base_url": "http://127.0.0.1:8080/v1", "temperature": 0.6},
                          "tuned": {"model": "tuned-model", "base_url": "http://127.0.0.1:8081/v1", "temperature": 0.6}},
            "config": {"samples": 2, "languages": ["en", "zh"], "confidence": 0.95}, "finished_at": "2026-11-25T00:00:00"}
    return EvalResult(responses=judged, metrics=summarize(judged, resamples=200), errors=error_rows(judged), meta=meta)


def test_outputs_are_written_atomically_and_self_contained(tmp_path: Path):
    result = make_result()
    paths = write_outputs(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in paths.values())  # no temp files

    html = paths["report"].read_text(encoding="utf-8")
    # No resource is fetched from anywhere: no src/href/url()/@import pointing off the page.
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!#)""", html, re.IGNORECASE)
    assert not re.search(r"url\((?!#)|@import", html)
    assert html.count("<svg") == html.count("</svg>") >= 1 + 5 + 5  # overview + per-language + per-category charts
    assert "base-model" in html and "tuned-model" in html

    doc = json.loads(paths["metrics_json"].read_text(encoding="utf-8"))
    assert doc["errors"]["total"] == result.errors.height == 10  # 6 generation failures + 4 judge failures
    assert {"generate", "satisfaction"} == {r["stage"] for r in doc["errors"]["by_endpoint_stage"]}
    overall = [m for m in doc["metrics"] if m["language"] == "all" and m["category"] == "all"]
    assert {(m["endpoint"], m["metric"]) for m in overall} == {
        (e, m) for e in ("base", "tuned")
        for m in ("response_rate", "satisfaction", "attack_success_rate", "over_refusal_rate", "unsafe_refusal_rate")}
    assert all(m["ci_low"] <= m["value"] <= m["ci_high"] for m in doc["metrics"] if m["ci_low"] is not None)
    assert pl.read_parquet(paths["responses"]).height == result.responses.height


@pytest.mark.slow
@pytest.mark.browser
def test_report_renders_in_headless_chromium_with_charts_and_errors(tmp_path: Path):
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is missing: scripts/setup.sh installs it (apt-get install -y chromium)")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    paths = write_outputs(make_result(), tmp_path / "out", title="base vs tuned")
    shot = tmp_path / "report.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(paths["report"].as_uri())
            sizes = page.eval_on_selector_all(
                "figure.chart svg", "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; })")
            bars = page.eval_on_selector_all("#chart-overview svg path", "els => els.length")
            error_rows = page.locator("tr.error-row")
            assert error_rows.count() == 10
            assert error_rows.first.is_visible()
            banner = page.locator("#errors-banner").inner_text()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert requests == [paths["report"].as_uri()]  # nothing but the page itself was loaded
    assert len(sizes) == 11 and all(w > 100 and h > 100 for w, h in sizes)
    assert bars > 20
    assert "10 failed calls" in banner
    image = Image.open(shot).convert("L")
    assert image.size[1] > 2000
    histogram = image.histogram()
    assert max(histogram) < 0.97 * sum(histogram)  # not a blank page
    colors = Image.open(shot).convert("RGB").resize((320, 1000)).getcolors(maxcolors=1 << 16) or []
    assert len(colors) > 50  # charts in several colours, not only text
