"""Flow control: requests/min and tokens/min budgets, server-requested pauses, retry backoff."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How failed calls are retried. `max_retries` comes from the endpoint config."""

    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    # Cap on a server's Retry-After, so a misconfigured proxy cannot stall a run for hours.
    max_retry_after_s: float = 600.0
    # Resamples when the output fails to parse or validate (structured output), per request.
    max_invalid_retries: int = 2

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries of many
        requests that failed together spread out instead of returning in lockstep."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2**attempt))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(headers: object) -> float | None:
    """Seconds to wait from `retry-after-ms` / `Retry-After` (seconds or an HTTP date), if present."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    ms = get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RateLimiter:
    """Bounds request starts per minute and tokens per minute, and holds everyone back while a
    server has asked for a pause (429 with Retry-After).

    Both budgets are token buckets that refill continuously and hold `burst_s` seconds' worth:
    providers enforce per-minute limits over shorter windows too, so a smooth rate is safer than
    spending a whole minute's budget in the first second. A call reserves its estimated tokens
    (prompt estimate + max_tokens) before it starts and settles the difference once the server
    reports actual usage; a budget may go briefly negative, which delays later calls.
    """

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 burst_s: float = 2.0):
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self._max_requests = max(1.0, (requests_per_minute or 0) * burst_s / 60)
        self._max_tokens = max(1.0, (tokens_per_minute or 0) * burst_s / 60)
        now = time.monotonic()
        self._requests = self._max_requests
        self._tokens = self._max_tokens
        self._updated = now
        self._paused_until = 0.0
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        self._updated = now
        if self.rpm:
            self._requests = min(self._max_requests, self._requests + elapsed * self.rpm / 60)
        if self.tpm:
            self._tokens = min(self._max_tokens, self._tokens + elapsed * self.tpm / 60)

    def pause(self, seconds: float) -> None:
        """Hold every new request for `seconds` (a server said it is overloaded)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, tokens: int) -> int:
        """Wait for room for one request of about `tokens` tokens; returns the tokens reserved."""
        if self.tpm:
            tokens = max(1, min(tokens, int(self._max_tokens)))  # a request bigger than the bucket still gets to run
        # One waiter at a time keeps the order fair and the arithmetic simple.
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._paused_until:
                    await asyncio.sleep(self._paused_until - now)
                    continue
                self._refill(now)
                waits = [0.0]
                if self.rpm and self._requests < 1:
                    waits.append((1 - self._requests) * 60 / self.rpm)
                if self.tpm and self._tokens < tokens:
                    waits.append((tokens - self._tokens) * 60 / self.tpm)
                wait = max(waits)
                if wait <= 0:
                    if self.rpm:
                        self._requests -= 1
                    if self.tpm:
                        self._tokens -= tokens
                    return tokens if self.tpm else 0
                await asyncio.sleep(wait)

    def settle(self, reserved: int, used: int | None) -> None:
        """Give back (or take more of) the token budget once actual usage is known."""
        if self.tpm and used is not None:
            self._refill(time.monotonic())
            self._tokens = min(self._max_tokens, self._tokens + reserved - used)
