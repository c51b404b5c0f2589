"""`curate judge-report`: the judge's calibration, score distributions, routing and audit as HTML.
(`curate judge` itself is the stage's command, from the pipeline table.)"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli.options import ConfigOpt, console, get_config, workspace_for
from curate.judge.report import write_judge_report
from curate.review.routing import workspace_routing_status
from curate.review.sync import review_config
from curate.tables import JUDGMENTS, REVIEW_DECISIONS


def judge_report(
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file (default: <workspace>/stages/judge/report.html).")] = None,
) -> None:
    """Write the judge report: calibration against human verdicts, score distributions, routing and audit."""
    cfg = get_config(config)
    ws = workspace_for(cfg)
    judgments = ws.read(JUDGMENTS)
    decisions = ws.read(REVIEW_DECISIONS) if ws.has_table(REVIEW_DECISIONS) else None
    meta = (ws.manifest(JUDGMENTS.stage) or {}).get("report", {})
    status = workspace_routing_status(ws, review_config(cfg).routing)
    path = write_judge_report(out or ws.stage_dir(JUDGMENTS.stage) / "report.html", judgments, decisions, status, meta)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("judge-report")(judge_report)
