"""One budget per endpoint: its concurrency, requests/min and tokens/min, shared by every call in
the process.

A flow runs up to `llm_slots` shards at once, each calling `complete_frame` on a thread of its
own (the calls themselves go out on the process's LLM loop, curate.llm.connections; a caller may
also await `acomplete_frame` on a loop of its own). If each call built its own semaphore and rate limiter, the endpoint
would see `llm_slots` times the configured concurrency and rate. Instead every call looks up the
budget of its endpoint here, keyed by base URL, model and the *name* of the key's environment
variable (never the key), and all of them draw on the same slots and buckets. A 429 with
Retry-After pauses the whole budget, so every shard and stage using that endpoint waits.

Worker processes (the `processes` task runner, Dask workers) cannot share memory with the flow,
so each takes a share of the budget instead: `set_process_share(1 / shards_in_flight)`, set by
the flow before a shard runs out of process (curate.shards). Since at most
`shards_in_flight` shards run at once, the shares add up to the configured budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from curate.config import EndpointConfig
from curate.llm.limits import LoopSafeSemaphore, RateLimiter

log = logging.getLogger("curate.llm")


@dataclass(frozen=True)
class EndpointLimits:
    """The flow-control settings of an endpoint config, as this process applies them."""

    max_concurrency: int
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    @classmethod
    def of(cls, endpoint: EndpointConfig, share: float = 1.0) -> EndpointLimits:
        """The endpoint's limits times `share` (this process's part of the budget). A share never
        goes below one request in flight, or the process could not run at all."""
        def part(value: float | None) -> float | None:
            return value * share if value else None

        return cls(max(1, math.floor(endpoint.max_concurrency * share + 1e-9)),
                   part(endpoint.requests_per_minute), part(endpoint.tokens_per_minute))


def strictest(limits: list[EndpointLimits]) -> EndpointLimits:
    """The tightest of each limit (no rate limit counts as the loosest)."""
    def least(values: list[float | None]) -> float | None:
        given = [v for v in values if v]
        return min(given) if given else None

    return EndpointLimits(min(lim.max_concurrency for lim in limits),
                          least([lim.requests_per_minute for lim in limits]),
                          least([lim.tokens_per_minute for lim in limits]))


def endpoint_identity(endpoint: EndpointConfig) -> tuple[str, str, str]:
    """What makes two configs the same endpoint: where it is, which model, whose key."""
    return (endpoint.base_url.rstrip("/"), endpoint.model, endpoint.api_key_env)


class EndpointBudget:
    """The shared flow control of one endpoint: `slots` (requests in flight) and `rates`
    (requests/min, tokens/min, server-requested pauses).

    Each run registers its limits with `use()` while it runs. Normally they are all the same;
    when runs with different settings for one endpoint overlap, the strictest of each applies
    until they are done, so no run's setting is exceeded.
    """

    def __init__(self, identity: tuple[str, str, str], limits: EndpointLimits):
        self.identity = identity
        self.limits = limits
        self.slots = LoopSafeSemaphore(limits.max_concurrency)
        self.rates = RateLimiter(limits.requests_per_minute, limits.tokens_per_minute)
        self._users: Counter[EndpointLimits] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def use(self, limits: EndpointLimits) -> Iterator[EndpointBudget]:
        with self._lock:
            self._users[limits] += 1
            self._apply_locked()
        try:
            yield self
        finally:
            with self._lock:
                self._users[limits] -= 1
                if not self._users[limits]:
                    del self._users[limits]
                self._apply_locked()

    def _apply_locked(self) -> None:
        if not self._users:
            return  # idle: keep the last limits; the next run sets its own
        effective = strictest(list(self._users))
        if effective == self.limits:
            return
        if len(self._users) > 1:
            log.warning("runs with different limits share endpoint %s (model %s): using the strictest, %s",
                        self.identity[0], self.identity[1], effective)
        self.limits = effective
        self.slots.set_capacity(effective.max_concurrency)
        self.rates.set_rates(effective.requests_per_minute, effective.tokens_per_minute)

    def pause(self, seconds: float) -> None:
        """Hold every new request to this endpoint for `seconds`."""
        self.rates.pause(seconds)


_budgets: dict[tuple[str, str, str], EndpointBudget] = {}
_registry_lock = threading.Lock()
_process_share = 1.0


def set_process_share(share: float) -> None:
    """This process's part of every endpoint budget (1.0 in the flow process; 1/n in each of the
    worker processes when at most n of them call the endpoint at once)."""
    global _process_share
    if not 0 < share <= 1:
        raise ValueError(f"budget share must be in (0, 1], got {share}")
    _process_share = share


def process_share() -> float:
    return _process_share


def endpoint_budget(endpoint: EndpointConfig) -> EndpointBudget:
    """The process-wide budget of `endpoint` (created on first use)."""
    identity = endpoint_identity(endpoint)
    with _registry_lock:
        budget = _budgets.get(identity)
        if budget is None:
            budget = _budgets[identity] = EndpointBudget(identity, EndpointLimits.of(endpoint, _process_share))
        return budget


def _label(identity: tuple[str, str, str]) -> str:
    """`model at scheme://host:port/path`, without any user:password a base URL might carry."""
    base_url, model, _ = identity
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{model} at {parts.scheme}://{host}{parts.path}"


@contextmanager
def utilization_meter() -> Iterator[Callable[[], dict[str, dict[str, Any]]]]:
    """Measures how busy each endpoint of this process is kept inside the `with` block.

    The callable it yields gives, per endpoint used in the block: `busy_slot_s` (seconds of
    requests in flight, summed), `slots` (its max_concurrency here), `wall_s`, and `utilization`,
    busy_slot_s / (slots x wall_s): 1.0 means every allowed slot was busy the whole time.
    Requests made in worker processes are not seen (each worker has its own budgets)."""
    with _registry_lock:
        before = {identity: budget.slots.busy_slot_seconds() for identity, budget in _budgets.items()}
    started = time.monotonic()

    def read() -> dict[str, dict[str, Any]]:
        wall = time.monotonic() - started
        with _registry_lock:
            budgets = list(_budgets.items())
        out: dict[str, dict[str, Any]] = {}
        for identity, budget in budgets:
            busy = budget.slots.busy_slot_seconds() - before.get(identity, 0.0)
            if busy <= 0:
                continue
            slots = budget.limits.max_concurrency
            out[_label(identity)] = {"busy_slot_s": round(busy, 3), "slots": slots, "wall_s": round(wall, 3),
                                     "utilization": round(busy / (slots * wall), 3) if wall > 0 else None}
        return out

    yield read
