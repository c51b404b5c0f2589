"""`curate judge`: score every candidate answer (judge/judgments, judge/scores, judge/preferences)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from curate.cli.options import ConfigOpt, ForceOpt, NoCacheOpt, QuietOpt, console, get_config, print_result, workspace_for
from curate.config import Config, stage_config

# Tables the stage reads when they exist; candidates are required.
OPTIONAL_INPUTS = {"rejects": "answers/rejects", "questions": "questions/questions"}


def judge_config(cfg: Config):
    """`[stages.judge]`, each judge's unset endpoint fields filled in from `[llm]`, langid from `[langid]`."""
    from curate.stages.judge import JudgeConfig

    raw: dict[str, Any] = dict(cfg.stages.get("judge", {}))
    judges = raw.get("judges") or [{"name": "default"}]
    raw["judges"] = [cfg.llm.model_dump() | dict(j) for j in judges]
    raw.setdefault("langid", cfg.langid.model_dump())
    return stage_config(cfg.model_copy(update={"stages": cfg.stages | {"judge": raw}}), "judge", JudgeConfig)


def judge_inputs(ws) -> dict[str, str]:
    inputs = {"candidates": "answers/candidates"}
    for name, ref in OPTIONAL_INPUTS.items():
        stage, table = ref.split("/")
        manifest = ws.manifest(stage) or {}
        if manifest.get("status") == "complete" and table in manifest.get("outputs", {}):
            inputs[name] = ref
    return inputs


def judge(config: ConfigOpt = None, force: ForceOpt = False, no_cache: NoCacheOpt = False, quiet: QuietOpt = False) -> None:
    """Judge every candidate answer: satisfaction, harm, evasion, language, cheap signals, best of K."""
    from curate.llm import LLMCache
    from curate.progress import progress_bar
    from curate.stages.judge import judge_stage

    cfg = get_config(config)
    jcfg = judge_config(cfg)
    ws = workspace_for(cfg)
    inputs = judge_inputs(ws)
    n = ws.read(inputs["candidates"]).height
    total = n * len(jcfg.judges) * (2 if jcfg.harm else 1)
    with ws.locked(), LLMCache.for_workspace(ws.root) as cache, progress_bar("judge", total, enabled=not quiet) as advance:
        result = ws.run_stage("judge", judge_stage, inputs=inputs, config=jcfg, force=force or no_cache, cache=cache,
                              progress=advance, refresh=no_cache, prices=cfg.prices)
    print_result(result)
    report = result.manifest.get("report", {})
    console.print(f"judge: {report.get('judged', 0)} judged, {report.get('errors', 0)} with a failed judge call, "
                  f"{report.get('best_chosen', 0)} chosen, {report.get('preference_pairs', 0)} preference pairs")


def judge_report(
    config: ConfigOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="HTML file (default: <workspace>/stages/judge/report.html).")] = None,
) -> None:
    """Write the judge report: calibration against human verdicts, score distributions, routing and audit."""
    import polars as pl

    from curate.judge.report import write_judge_report
    from curate.review.config import ReviewConfig
    from curate.review.routing import workspace_routing_status

    cfg = get_config(config)
    ws = workspace_for(cfg)
    judgments = ws.read("judge/judgments")
    decisions_path = ws.table_path("review", "decisions")
    decisions = pl.read_parquet(decisions_path) if decisions_path.exists() else None
    routing = stage_config(cfg, "review", ReviewConfig).routing  # type: ignore[attr-defined]
    meta = (ws.manifest("judge") or {}).get("report", {})
    path = write_judge_report(out or ws.stage_dir("judge") / "report.html", judgments, decisions,
                              workspace_routing_status(ws, routing), meta)
    console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("judge")(judge)
    app.command("judge-report")(judge_report)


__all__ = ["judge", "judge_config", "judge_inputs", "register"]
