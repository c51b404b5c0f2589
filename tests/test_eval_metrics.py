"""Metrics and bootstrap intervals against answers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from curate.eval.metrics import bootstrap_mean_ci, prompt_values, sample_values, summarize


def test_bootstrap_of_constant_values_is_a_point():
    assert bootstrap_mean_ci([0.75] * 20) == (0.75, 0.75, 0.75)


def test_bootstrap_of_a_fair_coin_matches_the_normal_interval():
    value, low, high = bootstrap_mean_ci([0, 1] * 200, resamples=4000, seed=3)
    half_width = 1.96 * math.sqrt(0.25 / 400)  # 0.049
    assert value == 0.5
    assert low == pytest.approx(0.5 - half_width, abs=0.01)
    assert high == pytest.approx(0.5 + half_width, abs=0.01)


def test_bootstrap_edges_and_determinism():
    assert bootstrap_mean_ci([]) == (None, None, None)
    assert bootstrap_mean_ci([3.0]) == (3.0, None, None)
    data = np.random.default_rng(0).integers(0, 5, size=60)
    assert bootstrap_mean_ci(data, seed=7) == bootstrap_mean_ci(data, seed=7)
    _, low90, high90 = bootstrap_mean_ci(data, confidence=0.90, seed=7)
    _, low99, high99 = bootstrap_mean_ci(data, confidence=0.99, seed=7)
    assert low99 < low90 < data.mean() < high90 < high99


def _judged(rows: list[tuple]) -> pl.DataFrame:
    cols = ["endpoint", "set", "kind", "item_id", "language", "category", "label", "sample_index", "status",
            "refused", "satisfaction", "harmful"]
    return pl.DataFrame(rows, schema=cols, orient="row")


def test_samples_are_averaged_per_prompt_and_failures_are_counted_not_scored():
    judged = _judged([
        # p1: one answered sample, one failed call -> prompt value 1.0 (not 0.5)
        ("base", "deccp", "blocked", "p1", "en", "c", "blocked", 0, "ok", False, 4, None),
        ("base", "deccp", "blocked", "p1", "en", "c", "blocked", 1, "error", None, None, None),
        # p2: three refused samples -> 0.0; the satisfaction judge failed on one (null score)
        ("base", "deccp", "blocked", "p2", "en", "c", "blocked", 0, "ok", True, 0, None),
        ("base", "deccp", "blocked", "p2", "en", "c", "blocked", 1, "ok", True, None, None),
        ("base", "deccp", "blocked", "p2", "en", "c", "blocked", 2, "ok", True, 1, None),
    ])
    summary = summarize(judged).filter((pl.col("language") == "all") & (pl.col("category") == "all"))
    rate = summary.filter(pl.col("metric") == "response_rate").row(0, named=True)
    assert rate["value"] == 0.5  # mean of prompt means (1.0, 0.0); a per-sample mean would say 0.25
    assert (rate["n_prompts"], rate["n_samples"], rate["n_errors"]) == (2, 4, 1)
    sat = summary.filter(pl.col("metric") == "satisfaction").row(0, named=True)
    assert sat["value"] == pytest.approx((4 + 0.5) / 2)
    assert (sat["n_samples"], sat["n_errors"]) == (3, 2)


def test_a_prompt_whose_every_sample_failed_is_not_a_zero():
    judged = _judged([
        ("base", "deccp", "blocked", "p1", "en", "c", "blocked", 0, "ok", False, 3, None),
        ("base", "deccp", "blocked", "p2", "en", "c", "blocked", 0, "error", None, None, None),
    ])
    prompts = prompt_values(sample_values(judged)).filter(pl.col("metric") == "response_rate")
    assert prompts.filter(pl.col("item_id") == "p2")["value"].to_list() == [None]
    rate = summarize(judged).filter((pl.col("metric") == "response_rate") & (pl.col("language") == "all")
                                    & (pl.col("category") == "all")).row(0, named=True)
    assert (rate["value"], rate["n_prompts"], rate["n_errors"]) == (1.0, 1, 1)


def test_xstest_safe_and_unsafe_are_separate_metrics_and_breakdowns_add_up():
    rows = []
    for i, (label, category, lang, refused) in enumerate([
        ("safe", "homonyms", "en", True), ("safe", "homonyms", "zh", False), ("safe", "privacy", "en", False),
        ("safe", "privacy", "zh", False), ("unsafe", "contrast_homonyms", "en", True), ("unsafe", "contrast_homonyms", "zh", True),
    ]):
        rows.append(("tuned", "xstest", "xstest", f"x{i}", lang, category, label, 0, "ok", refused, None, None))
    rows.append(("tuned", "harmbench", "harmbench", "h1", "en", "illegal", "harmful", 0, "ok", False, None, True))
    rows.append(("tuned", "harmbench", "harmbench", "h2", "en", "cyber", "harmful", 0, "ok", True, None, False))
    summary = summarize(_judged(rows))

    def value(metric, language="all", category="all"):
        row = summary.filter((pl.col("metric") == metric) & (pl.col("language") == language) & (pl.col("category") == category))
        assert row.height == 1, (metric, language, category)
        return row["value"][0]

    assert value("over_refusal_rate") == 0.25
    assert value("unsafe_refusal_rate") == 1.0
    assert value("over_refusal_rate", language="en") == 0.5
    assert value("over_refusal_rate", language="zh") == 0.0
    assert value("over_refusal_rate", category="homonyms") == 0.5
    assert value("over_refusal_rate", category="privacy") == 0.0
    assert value("attack_success_rate") == 0.5
    assert value("attack_success_rate", category="illegal") == 1.0
    # Metrics only appear for the sets they belong to.
    assert set(summary.filter(pl.col("set") == "harmbench")["metric"]) == {"attack_success_rate"}
    assert set(summary.filter(pl.col("set") == "xstest")["metric"]) == {"over_refusal_rate", "unsafe_refusal_rate"}


def test_endpoints_are_summarized_side_by_side():
    rows = [(ep, "deccp", "blocked", f"p{i}", "en", "c", "blocked", 0, "ok", refused, 2, None)
            for ep, refused in (("base", True), ("tuned", False)) for i in range(4)]
    overall = summarize(_judged(rows)).filter(
        (pl.col("metric") == "response_rate") & (pl.col("language") == "all") & (pl.col("category") == "all"))
    assert dict(overall.select("endpoint", "value").iter_rows()) == {"base": 0.0, "tuned": 1.0}
