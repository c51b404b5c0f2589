"""What `curate status` says about each stage: its state, the last good output, and problems.

A failed attempt does not hide the last good run: both are reported, so a bad input file never
makes earlier results look lost. A stage with failed LLM calls is `incomplete`, with their count
and kinds (curate.failures).
"""

from __future__ import annotations

from typing import Any

from curate.workspace import Workspace

SUMMARY_KEYS = ("status", "error", "fingerprint", "finished_at", "duration_s", "outputs", "llm_errors")


def stage_status(ws: Workspace, stage: str) -> dict[str, Any]:
    """{status, error, fingerprint, finished_at, duration_s, outputs, last_good}: the latest attempt,
    and under `last_good` the last complete run when the latest attempt failed."""
    good = ws.manifest(stage)
    failed = ws.failure(stage)
    latest = failed or good or {}
    out = {k: latest.get(k) for k in SUMMARY_KEYS}
    out["last_good"] = {k: good.get(k) for k in SUMMARY_KEYS} if failed and good else None
    return out


def workspace_status(ws: Workspace) -> dict[str, dict[str, Any]]:
    return {stage: stage_status(ws, stage) for stage in ws.stages()}


def describe_llm_errors(errors: dict[str, Any] | None) -> str:
    """'2 LLM errors (HTTP 500: 2)' or ''."""
    if not errors or not errors.get("count"):
        return ""
    kinds = ", ".join(f"{k}: {n}" for k, n in errors.get("kinds", {}).items())
    return f"{errors['count']} LLM errors ({kinds}); rerun to retry them"
