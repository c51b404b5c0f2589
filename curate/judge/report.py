"""The judge report: a self-contained HTML page (inline SVG) people would rather look at than read.

- calibration: for each judge satisfaction score, the share of human-decided rows people accepted
  (with a Wilson interval), per language; a calibrated judge rises from left to right;
- distributions: satisfaction counts per language (and failed judgments as "null");
- the routing and audit table from `curate review status`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from curate.eval.report import PALETTE, svg
from curate.review.routing import wilson_lower
from curate.workspace import atomic_write_text

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "judge_report.html.j2"
BUCKETS = ["0", "1", "2", "3", "4", "null"]


def calibration_table(judgments: pl.DataFrame, decisions: pl.DataFrame | None) -> pl.DataFrame:
    """language (and 'all') x rounded judge satisfaction: human-decided rows, accepted, rate and interval."""
    schema = {"language": pl.String, "score": pl.Int64, "n": pl.Int64, "accepted": pl.Int64, "rate": pl.Float64,
              "low": pl.Float64, "high": pl.Float64}
    if decisions is None or decisions.is_empty():
        return pl.DataFrame(schema=schema)
    done = decisions.filter(pl.col("decision").is_in(["accepted", "rejected"])).select("candidate_id", "accepted")
    both = judgments.filter(pl.col("satisfaction").is_not_null()).join(done, on="candidate_id", how="inner").with_columns(
        score=pl.col("satisfaction").round(0).cast(pl.Int64))
    both = pl.concat([both, both.with_columns(language=pl.lit("all"))], how="vertical_relaxed")
    grouped = both.group_by("language", "score").agg(n=pl.len().cast(pl.Int64), accepted=pl.col("accepted").sum().cast(pl.Int64))
    rows = []
    for r in grouped.sort("language", "score").iter_rows(named=True):
        low = wilson_lower(r["accepted"], r["n"], 0.975)
        high = 1 - wilson_lower(r["n"] - r["accepted"], r["n"], 0.975)
        rows.append(r | {"rate": r["accepted"] / r["n"], "low": low, "high": high})
    return pl.DataFrame(rows, schema=schema)


def calibration_chart(table: pl.DataFrame) -> str | None:
    if table.is_empty():
        return None
    from matplotlib.figure import Figure  # heavy (~1 s): loaded only when a report is drawn

    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    languages = sorted(table["language"].unique().to_list(), key=lambda x: (x != "all", x))
    for i, language in enumerate(languages):
        part = table.filter(pl.col("language") == language).sort("score")
        x, y = part["score"].to_list(), [v * 100 for v in part["rate"].to_list()]
        # max(0, ...): the bound can land a rounding error past the rate at 0% and 100%.
        err = [[max(0.0, (r - lo) * 100) for r, lo in zip(part["rate"], part["low"], strict=True)],
               [max(0.0, (hi - r) * 100) for r, hi in zip(part["rate"], part["high"], strict=True)]]
        style = {"linewidth": 2.5} if language == "all" else {"linewidth": 1.2, "alpha": 0.8}
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=PALETTE[i % len(PALETTE)], label=language, **style)
        for xi, yi, n in zip(x, y, part["n"].to_list(), strict=True):
            ax.annotate(f"n={n}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#555")
    ax.set_xticks(range(5))
    ax.set_xlim(-0.3, 4.3)
    ax.set_ylim(-5, 105)
    ax.set_xlabel("judge satisfaction (rounded mean of judges)")
    ax.set_ylabel("accepted by people (%)")
    ax.set_title("Judge calibration against human verdicts", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    return svg(fig, "chart-calibration")


def distribution_table(judgments: pl.DataFrame, by: str = "language") -> pl.DataFrame:
    bucket = pl.col("satisfaction").round(0).cast(pl.Int64).cast(pl.String).fill_null("null")
    return judgments.group_by(pl.col(by).fill_null("(none)").alias(by), bucket.alias("score")).len().sort(by, "score")


def distribution_chart(judgments: pl.DataFrame, by: str = "language") -> str | None:
    if judgments.is_empty():
        return None
    table = distribution_table(judgments, by)
    groups = sorted(table[by].unique().to_list())
    from matplotlib.figure import Figure  # heavy: see calibration_chart

    fig = Figure(figsize=(max(5.0, 1.1 * len(groups) + 2), 3.6))
    ax = fig.subplots()
    bottom = [0] * len(groups)
    for i, score in enumerate(BUCKETS):
        counts = {r[by]: r["len"] for r in table.filter(pl.col("score") == score).iter_rows(named=True)}
        values = [counts.get(g, 0) for g in groups]
        color = "#bbbbbb" if score == "null" else PALETTE[i % len(PALETTE)]
        ax.bar(groups, values, bottom=bottom, color=color, label=score)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("candidates")
    ax.set_title(f"Judge satisfaction per {by} (null = a judge call failed)", fontsize=10)
    ax.legend(title="score", fontsize=7, title_fontsize=8, frameon=False, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    return svg(fig, f"chart-distribution-{by}")


def render_judge_report(judgments: pl.DataFrame, decisions: pl.DataFrame | None, status: pl.DataFrame | None,
                        meta: dict[str, Any]) -> str:
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    calibration = calibration_table(judgments, decisions)
    return template.render(
        meta=meta,
        calibration_svg=calibration_chart(calibration),
        calibration=calibration.filter(pl.col("language") == "all").to_dicts(),
        language_svg=distribution_chart(judgments, "language"),
        topic_svg=distribution_chart(judgments, "topic"),
        status=status.to_dicts() if status is not None else [],
        judged=judgments.height,
        failed=int((judgments["status"] == "error").sum()) if judgments.height else 0,
    )


def write_judge_report(path: Path, judgments: pl.DataFrame, decisions: pl.DataFrame | None,
                       status: pl.DataFrame | None, meta: dict[str, Any]) -> Path:
    atomic_write_text(path, render_judge_report(judgments, decisions, status, meta))
    return path
