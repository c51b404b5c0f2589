"""The release flow: build release rows from the reviewed candidates and commit a new version."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from curate.config import load_config
from curate.release.create import create_release, release_config, store_uri
from curate.tasks import prefect_task
from curate.validate import check_config


def build_release(
    config_path: str | None, tags: list[str], notes: str | None, force: bool, draft: bool | None = None
) -> dict[str, Any]:
    """Commit the reviewed rows as a release; a summary for the flow's result."""
    cfg = check_config(load_config(config_path))
    result = create_release(
        cfg, tags=tags, flow_run_ids=[str(flow_run.id)] if flow_run.id else [], force=force, notes=notes, draft=draft
    )
    m = result.manifest
    return {
        "created": result.created, "version": m["version"], "rows": m["rows"], "content_hash": m["content_hash"],
        "store": store_uri(cfg, release_config(cfg)),
        "draft": m.get("draft", False), "pending_rows": m.get("pending_rows", 0),
        "unreviewed_rows": m.get("unreviewed_rows", 0),
    }


commit_release = prefect_task(build_release, "release")


@flow(name="release", log_prints=True)
def release_flow(
    config_path: str | None = None,
    tags: list[str] | None = None,
    notes: str | None = None,
    force: bool = False,
    draft: bool | None = None,
) -> dict[str, Any]:
    """Commit the current reviewed rows as a release (a no-op when the content equals the latest).

    `draft=True` (or `[stages.release] include_pending`) also takes candidates still pending review
    and tags the release 'draft'."""
    summary = commit_release(config_path, list(tags or []), notes, force, draft)
    get_run_logger().info(
        "release %s%s: %s, %s rows (%s unreviewed) in %s", summary["version"], " (draft)" if summary["draft"] else "",
        "created" if summary["created"] else "unchanged", summary["rows"], summary["unreviewed_rows"], summary["store"],
    )
    return summary
