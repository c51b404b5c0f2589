"""The review-sync flow: pull reviewers' responses from Argilla and compute agreement."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE

from curate.config import load_config
from curate.orchestrate import orchestration_config, retry_unless_user_error
from curate.workspace import Workspace
from flows.stages import pull_reviews


@flow(name="review-sync", log_prints=True)
def review_sync_flow(config_path: str | None = None) -> dict[str, Any]:
    """Pull responses into review/reviews, review/agreement and review/decisions."""
    cfg = load_config(config_path)
    orch = orchestration_config(cfg)
    ws = Workspace(cfg.workspace_path.resolve())
    pull = task(
        pull_reviews, name="review-pull", cache_policy=NONE, persist_result=False, retries=orch.retries,
        retry_delay_seconds=orch.retry_delay_s, retry_condition_fn=retry_unless_user_error,
    )
    with ws.locked(timeout=orch.lock_timeout_s):
        summary = pull(cfg.model_copy(update={"workspace": str(ws.root)}), ws)
    get_run_logger().info("review %s: %s, decisions %s", summary["campaign"], summary["pull"], summary["decisions"])
    return summary
