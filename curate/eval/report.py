"""The eval report: metrics JSON and a self-contained HTML page with charts (inline SVG).

Nothing in the page loads from the network: charts are inline SVG drawn with matplotlib, styles
are inline. Files are written atomically, so a crashed run never leaves half a report.
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Any

import jinja2
import polars as pl

from curate.eval.metrics import ALL, METRICS, METRICS_BY_NAME
from curate.eval.run import EvalResult
from curate.workspace import atomic_write_json, atomic_write_parquet, atomic_write_text

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "eval_report.html.j2"
PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
MAX_ERROR_ROWS = 200
_SVG_PROLOGUE = re.compile(r"^.*?(?=<svg)", re.DOTALL)


def _scale(metric: str) -> float:
    """Rates are shown in percent, satisfaction on its own 0-4 scale."""
    return 100.0 if METRICS_BY_NAME[metric].scale_max == 1.0 else 1.0


def format_value(metric: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value * 100:.1f}%" if _scale(metric) == 100.0 else f"{value:.2f}"


def _svg(fig: Any, chart_id: str) -> str:
    buf = io.StringIO()
    fig.set_gid(chart_id)
    import matplotlib  # heavy (~1 s): loaded only when a report is drawn

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": chart_id}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    return _SVG_PROLOGUE.sub("", buf.getvalue(), count=1)


def _bars(ax, frame: pl.DataFrame, groups: list[str], group_col: str, endpoints: list[str], metric: str,
          horizontal: bool = False) -> None:
    """Grouped bars: one group per `group_col` value, one bar per endpoint, CI whiskers, the value
    printed at the bar (so 0 and "no value" look different)."""
    scale = _scale(metric)
    top = 100.0 if scale == 100.0 else 4.0
    width = 0.8 / max(1, len(endpoints))
    for i, endpoint in enumerate(endpoints):
        rows = {r[group_col]: r for r in frame.filter(pl.col("endpoint") == endpoint).iter_rows(named=True)}
        color = PALETTE[i % len(PALETTE)]
        for g, name in enumerate(groups):
            row = rows.get(name)
            pos = g - 0.4 + width * (i + 0.5)
            if row is None or row["value"] is None:
                label, value, err = "n/a", 0.0, None
            else:
                value = row["value"] * scale
                low = value - row["ci_low"] * scale if row["ci_low"] is not None else 0.0
                high = row["ci_high"] * scale - value if row["ci_high"] is not None else 0.0
                err = [[low], [high]]
                label = f"{value:.0f}" if scale == 100.0 else f"{value:.1f}"
            if horizontal:
                ax.barh([pos], [value], height=width, xerr=err, color=color, capsize=2)
                ax.text(value + top * 0.01, pos, label, va="center", ha="left", fontsize=7, color="#333")
            else:
                ax.bar([pos], [value], width=width, yerr=err, color=color, capsize=3)
                ax.text(pos, value + top * 0.01, label, va="bottom", ha="center", fontsize=7, color="#333")
    ticks = list(range(len(groups)))
    if horizontal:
        ax.set_yticks(ticks, groups, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(0, top * 1.08)
        ax.grid(axis="x", alpha=0.3)
    else:
        rotate = len(groups) > 4
        ax.set_xticks(ticks, groups, fontsize=8, rotation=30 if rotate else 0, ha="right" if rotate else "center")
        ax.set_ylim(0, top * 1.08)
        ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _legend(ax, endpoints: list[str]) -> None:
    from matplotlib.patches import Patch  # heavy: see _svg

    handles = [Patch(color=PALETTE[i % len(PALETTE)], label=e) for i, e in enumerate(endpoints)]
    ax.legend(handles=handles, fontsize=8, loc="best", framealpha=0.8)


def overview_chart(metrics: pl.DataFrame, endpoints: list[str]) -> str | None:
    """One panel per metric: the overall value per set and endpoint with its interval."""
    overall = metrics.filter((pl.col("language") == ALL) & (pl.col("category") == ALL))
    present = [m for m in METRICS if m.name in set(overall["metric"])]
    if not present:
        return None
    cols = min(3, len(present))
    rows = math.ceil(len(present) / cols)
    from matplotlib.figure import Figure  # heavy: see _svg

    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, m in zip(axes, present, strict=False):
        frame = overall.filter(pl.col("metric") == m.name)
        sets = list(dict.fromkeys(frame["set"]))
        _bars(ax, frame, sets, "set", endpoints, m.name)
        ax.set_title(m.title + (" (%)" if _scale(m.name) == 100.0 else ""), fontsize=10)
    for ax in axes[len(present):]:
        ax.set_visible(False)
    _legend(axes[0], endpoints)
    fig.tight_layout()
    return _svg(fig, "chart-overview")


def breakdown_charts(metrics: pl.DataFrame, endpoints: list[str], by: str) -> list[dict[str, str]]:
    """Per metric and set: the value per language (`by="language"`) or per category."""
    other = "category" if by == "language" else "language"
    frame = metrics.filter((pl.col(other) == ALL) & (pl.col(by) != ALL))
    charts = []
    for m in METRICS:
        for set_name in dict.fromkeys(frame.filter(pl.col("metric") == m.name)["set"]):
            part = frame.filter((pl.col("metric") == m.name) & (pl.col("set") == set_name))
            groups = sorted(dict.fromkeys(part[by]))
            horizontal = by == "category"
            height = max(2.4, 0.32 * len(groups) * max(1, len(endpoints)) * 0.7 + 1.2) if horizontal else 3.0
            width = 5.6 if horizontal else max(4.0, 1.0 + 0.9 * len(groups) * max(1, len(endpoints)) ** 0.5)
            from matplotlib.figure import Figure  # heavy: see _svg

            fig = Figure(figsize=(width, height))
            ax = fig.subplots()
            _bars(ax, part, groups, by, endpoints, m.name, horizontal=horizontal)
            title = f"{m.title} by {by} - {set_name}"
            ax.set_title(title, fontsize=10)
            _legend(ax, endpoints)
            fig.tight_layout()
            chart_id = f"chart-{by}-{m.name}-{re.sub(r'[^A-Za-z0-9]+', '-', set_name)}"
            charts.append({"id": chart_id, "title": title, "svg": _svg(fig, chart_id)})
    return charts


def _table(metrics: pl.DataFrame, where: pl.Expr) -> list[dict[str, Any]]:
    rows = []
    for r in metrics.filter(where).iter_rows(named=True):
        ci = (f"{format_value(r['metric'], r['ci_low'])} - {format_value(r['metric'], r['ci_high'])}"
              if r["ci_low"] is not None else "")
        rows.append(r | {"title": METRICS_BY_NAME[r["metric"]].title, "shown": format_value(r["metric"], r["value"]), "ci": ci})
    return rows


def metrics_document(result: EvalResult) -> dict[str, Any]:
    """The JSON metrics file: run metadata, definitions, every summary row and error counts."""
    errors = result.errors
    return {
        "meta": result.meta,
        "definitions": {m.name: {"title": m.title, "set_kind": m.kind, "label": m.label, "scale_max": m.scale_max,
                                 "higher_is_better": m.higher_is_better, "description": m.description} for m in METRICS},
        "metrics": result.metrics.to_dicts(),
        "errors": {
            "total": errors.height,
            "by_endpoint_stage": [
                {"endpoint": e, "stage": s, "count": n}
                for e, s, n in errors.group_by("endpoint", "stage").len().sort("endpoint", "stage").iter_rows()
            ],
        },
    }


def render_report(result: EvalResult, title: str = "curate eval report") -> str:
    metrics = result.metrics
    endpoints = list(result.meta.get("endpoints") or dict.fromkeys(metrics["endpoint"]))
    errors = result.errors
    error_counts = errors.group_by("endpoint", "set", "stage").len().sort("endpoint", "set", "stage").to_dicts()
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        title=title,
        meta=result.meta,
        endpoints=[{"name": n, "color": PALETTE[i % len(PALETTE)], **(result.meta.get("endpoints", {}).get(n) or {})}
                   for i, n in enumerate(endpoints)],
        definitions=METRICS,
        overview_svg=overview_chart(metrics, endpoints),
        language_charts=breakdown_charts(metrics, endpoints, "language"),
        category_charts=breakdown_charts(metrics, endpoints, "category"),
        overall_rows=_table(metrics, (pl.col("language") == ALL) & (pl.col("category") == ALL)),
        language_rows=_table(metrics, (pl.col("language") != ALL) & (pl.col("category") == ALL)),
        category_rows=_table(metrics, (pl.col("language") == ALL) & (pl.col("category") != ALL)),
        error_total=errors.height,
        error_counts=error_counts,
        error_rows=errors.head(MAX_ERROR_ROWS).to_dicts(),
        max_error_rows=MAX_ERROR_ROWS,
    )


def write_outputs(result: EvalResult, out_dir: Path, title: str = "curate eval report") -> dict[str, Path]:
    """responses/metrics/errors as Parquet, metrics.json and report.html under `out_dir`."""
    out_dir = Path(out_dir)
    paths = {
        "responses": out_dir / "responses.parquet",
        "metrics": out_dir / "metrics.parquet",
        "errors": out_dir / "errors.parquet",
        "metrics_json": out_dir / "metrics.json",
        "report": out_dir / "report.html",
    }
    html = render_report(result, title)
    atomic_write_parquet(paths["responses"], result.responses)
    atomic_write_parquet(paths["metrics"], result.metrics)
    atomic_write_parquet(paths["errors"], result.errors)
    atomic_write_json(paths["metrics_json"], metrics_document(result))
    atomic_write_text(paths["report"], html)
    return paths
