"""Waiting for state in tests: poll for the state the test needs, with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T], what: str, *, timeout: float = 90.0, interval: float = 0.2,
             alive: Callable[[], None] | None = None) -> T:
    """The first truthy value `probe` returns; an exception from `probe` counts as "not yet".

    `alive` is called before each try (e.g. to fail fast when the process being waited on died)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        if alive is not None:
            alive()
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:  # not ready yet: a 404, a refused connection, a missing file
            last = exc
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f}s" + (f" (last error: {last!r})" if last else ""))
        time.sleep(interval)
