"""Prefect task settings, built in one place for every task the flows run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curate.errors import CurateError


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: bad input or config fails the same way every time, so it is not retried."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # the failure's payload is unreadable: retrying is the safe side
        return True
    return not isinstance(exc, CurateError)


def prefect_task(fn: Callable[..., Any], name: str, *, retries: int = 0, retry_delay_s: float = 0.0):
    """`fn` as a Prefect task: retried unless the error is the user's, results neither cached
    nor persisted (stage outputs live in the workspace; hashing frames for Prefect's cache would
    cost more than the work of cheap stages)."""
    # Prefect is heavy to import (~1 s); only flows and fan-out need it.
    from prefect import task
    from prefect.cache_policies import NONE

    return task(
        fn, name=name, cache_policy=NONE, persist_result=False, retries=retries, retry_delay_seconds=retry_delay_s,
        retry_condition_fn=retry_unless_user_error,
    )
