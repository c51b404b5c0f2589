"""`curate <stage>`: one command per stage of the pipeline table, each running it through the runner.

A stage gets the common options (config, --force, --no-cache, --quiet) by default; the few with
options of their own (seed files, an input table, languages, dedupe tuning) have a command here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer

from curate.cli.dedupe import CrossOpt, ExactOpt, KeepOpt, ModelOpt, ThresholdOpt, VerifyOpt, print_dedupe_summary
from curate.cli.options import (
    ConfigOpt,
    ForceOpt,
    NoCacheOpt,
    QuietOpt,
    get_config,
    print_report,
    print_result,
    workspace_for,
)
from curate.pipeline import CURATION, DEDUPE_NEAR_PAIRS, SAFETY, stage
from curate.orchestrate import execute_stage, orchestration_config
from curate.runner import Services, prepare
from curate.stages.declaration import Stage
from curate.workspace import StageResult


def run_stage_command(
    declared: Stage,
    config: Path | None,
    *,
    force: bool = False,
    no_cache: bool = False,
    quiet: bool = False,
    sources: list[Path] | None = None,
    inputs: Mapping[str, str | None] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StageResult:
    """Run one stage over the workspace (skipped when unchanged) and print what it did.

    It runs the way a flow runs it (curate.orchestrate.execute_stage): a stage that declares a
    shard input is cut into `[stages.orchestrate] shard_size` shards, checkpointed as they land
    (a rerun after a kill resumes with them), LLM shards on `llm_slots` threads; no Prefect."""
    cfg = get_config(config)
    ws = workspace_for(cfg)
    with ws.locked(), Services(ws, cfg, refresh=no_cache) as services:
        call, _ = prepare(declared, cfg, ws, services, have=ws.has_table, sources=sources, inputs=inputs, overrides=overrides)
        result = execute_stage(ws, call, orchestration_config(cfg), force=force or no_cache, progress=not quiet)
    print_result(result)
    print_report(result, declared.report_keys)
    return result


def stage_command(declared: Stage) -> Callable[..., None]:
    """The default command of a stage: the common options only."""

    def command(config: ConfigOpt = None, force: ForceOpt = False, no_cache: NoCacheOpt = False, quiet: QuietOpt = False) -> None:
        run_stage_command(declared, config, force=force, no_cache=no_cache, quiet=quiet)

    command.__doc__ = declared.summary
    return command


def ingest(
    sources: Annotated[list[Path], typer.Argument(help="Seed files: .jsonl .json .csv .tsv .parquet .txt or a datasets folder.")],
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    run_stage_command(stage("ingest"), config, force=force, sources=sources)


def keywords(
    config: ConfigOpt = None,
    force: ForceOpt = False,
    seeds: Annotated[str | None, typer.Option(help="Seed table; default blocked/seeds if it exists, else ingest/seeds.")] = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    run_stage_command(stage("keywords"), config, force=force, no_cache=no_cache, quiet=quiet, inputs={"seeds": seeds})


def translate(
    config: ConfigOpt = None,
    force: ForceOpt = False,
    languages: Annotated[str | None, typer.Option(help="Comma-separated target languages; default: config `languages`.")] = None,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    targets = [x.strip() for x in languages.split(",") if x.strip()] if languages else None
    run_stage_command(stage("translate"), config, force=force, no_cache=no_cache, quiet=quiet, overrides={"languages": targets})


def answers(
    config: ConfigOpt = None,
    input_table: Annotated[str | None, typer.Option("--input", help="Translations table (default: dedupe/translations if present, else translate/translations).")] = None,
    force: ForceOpt = False,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    run_stage_command(stage("answers"), config, force=force, no_cache=no_cache, quiet=quiet, inputs={"translations": input_table})


def dedupe(
    config: ConfigOpt = None,
    force: ForceOpt = False,
    threshold: ThresholdOpt = None,
    model: ModelOpt = None,
    keep: KeepOpt = None,
    cross_language: CrossOpt = None,
    exact_only: ExactOpt = False,
    verify: VerifyOpt = None,
    show_pairs: Annotated[int, typer.Option(help="Near-threshold pairs to print.")] = 5,
    quiet: QuietOpt = False,
) -> None:
    overrides = {"threshold": threshold, "model": model, "keep": keep, "cross_language": cross_language,
                 "semantic": False if exact_only else None, "verify": verify}
    result = run_stage_command(stage("dedupe"), config, force=force, quiet=quiet, overrides=overrides)
    near = pl.read_parquet(result.outputs[DEDUPE_NEAR_PAIRS.table])
    print_dedupe_summary(result.manifest.get("report", {}), near, show_pairs)


def judge(config: ConfigOpt = None, force: ForceOpt = False, no_cache: NoCacheOpt = False, quiet: QuietOpt = False) -> None:
    # `curate judge` scores and chooses, as it did before the scoring became a sharded stage of its own.
    run_stage_command(stage("judge_score"), config, force=force, no_cache=no_cache, quiet=quiet)
    run_stage_command(stage("judge"), config, force=force, quiet=quiet)


COMMANDS: dict[str, Callable[..., None]] = {
    "ingest": ingest, "keywords": keywords, "translate": translate, "answers": answers, "dedupe": dedupe, "judge": judge,
}


def register(app: typer.Typer) -> None:
    for declared in (*CURATION, *SAFETY):
        command = COMMANDS.get(declared.name)
        if command is None:
            command = stage_command(declared)
        elif declared.name == "judge":
            command.__doc__ = f"Run judge_score, then: {declared.summary[0].lower()}{declared.summary[1:]}"
        else:
            command.__doc__ = declared.summary
        app.command(declared.name)(command)
