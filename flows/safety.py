"""The safety flow: the stages of `curate.pipeline.SAFETY` in order (safety prompts, K answers
with reasoning from R1, the inverse filter), each through the one runner as a Prefect task.

Like the curation flow: unchanged stages are skipped, the answers stage fans out by shard and
holds LLM slots, and at the end the rows that need a person (`safety_filter/review`) are pushed to
Argilla in `[stages.review] safety_campaign`, with the filter's judgments as suggestions (leave it
out with `skip = ["review_push"]` in `[stages.orchestrate]`). Releases take the filter's selected
rows, and reviewed rows people accepted, through a `[[stages.release.mix]]` entry with
`table = "safety_filter/selected"` (docs/safety.md).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from curate.config import Config, load_config
from curate.errors import ConfigError
from curate.orchestrate import ensure_llm_limit, flow_runner, orchestration_config, run_stage_task
from curate.pipeline import REVIEW_PUSH, SAFETY, SAFETY_STEPS
from curate.review.sync import push_for_review, safety_review_config
from curate.runner import Services, run_pipeline
from curate.tables import SAFETY_REVIEW
from curate.tasks import prefect_task
from curate.validate import check_config
from curate.workspace import Workspace


def check_safety_args(config_path: str | None, until: str | None) -> Config:
    """The loaded config (checked whole), or a clear error before any Prefect run starts."""
    if until is not None and until not in SAFETY_STEPS:
        raise ConfigError(f"until: unknown safety stage '{until}' (one of {', '.join(SAFETY_STEPS)})")
    return check_config(load_config(config_path))


def safety_review_push(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """Send new or changed safety review rows to their campaign; a stage-like summary for the run."""
    review_cfg = safety_review_config(cfg)
    report = push_for_review(cfg, ws, review_cfg)
    return {
        "stage": REVIEW_PUSH, "skipped": report.pushed == 0, "rows": {"pushed": report.pushed},
        "duration_s": report.seconds, "shards": None,
        "report": report.as_dict() | {"argilla_url": cfg.argilla.api_url, "campaign": review_cfg.campaign},
    }


@flow(name="safety", log_prints=True)
def safety_flow(config_path: str | None = None, until: str | None = None, force: bool = False) -> list[dict[str, Any]]:
    """Run every safety stage in order (through `until`); unchanged stages are skipped."""
    cfg = check_safety_args(config_path, until)
    orch = orchestration_config(cfg)
    ws = Workspace(cfg.workspace_path.resolve())
    cfg = cfg.model_copy(update={"workspace": str(ws.root)})
    get_run_logger().info("workspace %s, safety stages %s", ws.root, list(SAFETY_STEPS))
    ensure_llm_limit(orch)
    with ws.locked(timeout=orch.lock_timeout_s), flow_runner(orch) as runner, Services(ws, cfg) as services:
        summaries = list(run_pipeline(
            cfg, ws, services, lambda call: run_stage_task(ws, call, orch, runner=runner, force=force),
            sources=[], stages=SAFETY, until=until,
        ))
        # Like the curation flow's last step: the rows the filter could not decide go to people.
        wants_push = until is None and REVIEW_PUSH not in orch.skip
        if wants_push and ws.has_table(SAFETY_REVIEW) and not ws.read(SAFETY_REVIEW).is_empty():
            push = prefect_task(safety_review_push, REVIEW_PUSH, retries=orch.retries, retry_delay_s=orch.retry_delay_s)
            summaries.append(push(cfg, ws))
            get_run_logger().info("safety review push: %s", summaries[-1]["report"])
        return summaries


__all__ = ["safety_flow"]
