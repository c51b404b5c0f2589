"""The review-sync flow: pull reviewers' responses from Argilla and compute agreement."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from curate.config import Config, load_config
from curate.flow_runs import workspace_run
from curate.orchestrate import orchestration_config
from curate.review.sync import pull_reviews, review_config
from curate.tasks import prefect_task
from curate.validate import check_config
from curate.workspace import Workspace


def review_pull(cfg: Config, ws: Workspace) -> dict[str, Any]:
    """`curate review pull` as a summary for the flow's result."""
    campaign = review_config(cfg).campaign
    result = pull_reviews(cfg, ws)
    report = result.manifest["report"]
    return {"campaign": campaign, "rows": result.rows, "pull": report["pull"],
            "mode": report["incremental"][campaign]["mode"], "decisions": report["decisions"]}


@flow(name="review-sync", log_prints=True)
def review_sync_flow(config_path: str | None = None) -> dict[str, Any]:
    """Pull responses into review/reviews, review/agreement and review/decisions."""
    cfg = check_config(load_config(config_path))
    orch = orchestration_config(cfg)
    ws = Workspace(cfg.workspace_path.resolve())
    pull = prefect_task(review_pull, "review-pull", retries=orch.retries, retry_delay_s=orch.retry_delay_s)
    with workspace_run(ws, timeout=orch.lock_timeout_s):
        summary = pull(cfg.model_copy(update={"workspace": str(ws.root)}), ws)
    get_run_logger().info("review %s: %s, decisions %s", summary["campaign"], summary["pull"], summary["decisions"])
    return summary
