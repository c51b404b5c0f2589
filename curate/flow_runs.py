"""Flow runs that died holding the workspace: marked crashed instead of staying RUNNING forever.

A flow killed with SIGKILL never reports its end, so Prefect shows it RUNNING indefinitely. While
a flow holds the workspace lock it keeps a marker file `<workspace>/.flow-runs/<flow run id>`;
a clean exit removes it. The lock is released by the OS when a process dies, so when the next
run takes the lock, any marker still there belongs to a run that died holding it: that run is
set to CRASHED in Prefect (if it still shows as running) and the marker removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curate.workspace import Workspace, atomic_write_text

MARKERS = ".flow-runs"
log = logging.getLogger(__name__)


def _current_flow_run_id() -> str | None:
    from prefect.runtime import flow_run  # heavy import; only flows reach this

    run_id = flow_run.id
    return str(run_id) if run_id else None


def mark_crashed(flow_run_ids: list[str], workspace: Path) -> list[str]:
    """Set each still-running flow run to CRASHED; returns the ids that were changed."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    changed = []
    with get_client(sync_client=True) as client:
        for run_id in flow_run_ids:
            try:
                run = client.read_flow_run(run_id)
            except Exception as exc:  # noqa: BLE001 - another server's run, or deleted: nothing to mark
                log.warning("flow run %s of workspace %s not found on this Prefect server: %s", run_id, workspace, exc)
                continue
            if run.state is not None and not run.state.is_final():
                message = f"killed while holding workspace {workspace}; found by a later run that took the lock"
                client.set_flow_run_state(run_id, Crashed(message=message), force=True)
                changed.append(run_id)
    return changed


@contextmanager
def workspace_run(ws: Workspace, timeout: float = -1) -> Iterator[list[str]]:
    """Hold the workspace lock for this flow run; yields the ids of earlier runs marked crashed."""
    with ws.locked(timeout=timeout):
        folder = ws.root / MARKERS
        stale = sorted(p.name for p in folder.glob("*")) if folder.exists() else []
        me = _current_flow_run_id()
        stale = [s for s in stale if s != me]
        crashed = mark_crashed(stale, ws.root) if stale else []
        for name in stale:
            (folder / name).unlink(missing_ok=True)
        marker = folder / me if me else None
        if marker is not None:
            atomic_write_text(marker, f"{me}\n")
        try:
            yield crashed
        finally:
            if marker is not None:
                marker.unlink(missing_ok=True)
