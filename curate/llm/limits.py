"""Flow control: requests/min and tokens/min budgets, server-requested pauses, retry backoff."""

from __future__ import annotations

import asyncio
import email.utils
import random
import threading
import time
from collections import deque
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


class LoopSafeSemaphore:
    """A counting semaphore that coroutines on different event loops, in different threads, share.

    `asyncio.Semaphore` belongs to one loop, but an endpoint's calls may run on several: the
    process's LLM loop (curate.llm.connections) and any loop that awaits `acomplete_frame` itself. Here
    the count lives under a `threading.Lock`; a waiter parks a future on its own loop and the
    releaser hands the slot over with `call_soon_threadsafe`. Waiters are served first come,
    first served, whichever loop they are on. `capacity` may change while in use.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._lock = threading.Lock()
        self._capacity = capacity
        self._in_use = 0
        self._waiters: deque[_Waiter] = deque()
        # Slot-seconds held so far: how busy the endpoint was kept (see busy_slot_seconds).
        self._busy_s = 0.0
        self._changed = time.monotonic()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    def busy_slot_seconds(self) -> float:
        """Time integral of slots held since creation: divided by capacity x wall time over a
        window, the share of the allowed concurrency that was in use."""
        with self._lock:
            self._count_locked(0)
            return self._busy_s

    def _count_locked(self, change: int) -> None:
        now = time.monotonic()
        self._busy_s += self._in_use * (now - self._changed)
        self._changed = now
        self._in_use += change

    @property
    def idle(self) -> bool:
        """Nobody holds or waits (a snapshot: another thread may change it right after)."""
        return self._in_use == 0 and not self._waiters

    def set_capacity(self, capacity: int) -> None:
        """A new bound; holders above it keep their slots, waiters start as room appears."""
        with self._lock:
            self._capacity = max(1, capacity)
            self._wake_locked()

    async def acquire(self) -> None:
        with self._lock:
            if self._in_use < self._capacity and not self._waiters:
                self._count_locked(1)
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter.future
        except BaseException:  # cancelled: give the slot back if it was already handed over
            with self._lock:
                if not waiter.granted:
                    self._waiters.remove(waiter)
                    raise
            self.release()
            raise

    def release(self) -> None:
        with self._lock:
            self._count_locked(-1)
            self._wake_locked()

    def _wake_locked(self) -> None:
        while self._waiters and self._in_use < self._capacity:
            waiter = self._waiters.popleft()
            waiter.granted = True
            self._count_locked(1)
            try:
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future)
            except RuntimeError:  # its loop is closed: nobody is waiting any more
                waiter.granted = False
                self._count_locked(-1)

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    granted: bool = False


def _resolve(future: asyncio.Future) -> None:
    if not future.done():  # a cancelled waiter hands its slot back itself
        future.set_result(None)


class RateLimiter:
    """Bounds request starts per minute and tokens per minute, and holds everyone back while a
    server has asked for a pause (429 with Retry-After).

    Both budgets are token buckets that refill continuously and hold `burst_s` seconds' worth:
    providers enforce per-minute limits over shorter windows too, so a smooth rate is safer than
    spending a whole minute's budget in the first second. A call reserves its estimated tokens
    (prompt estimate + max_tokens) before it starts and settles the difference once the server
    reports actual usage; a budget may go briefly negative, which delays later calls.

    Safe to share between threads and event loops (one limiter serves a whole process; see
    curate.llm.budget): the buckets are guarded by a `threading.Lock`, and waiters queue through
    a `LoopSafeSemaphore` of one, first come, first served.
    """

    def __init__(self, requests_per_minute: float | None = None, tokens_per_minute: float | None = None,
                 burst_s: float = 2.0):
        self._state = threading.Lock()
        self._gate = LoopSafeSemaphore(1)
        self._burst_s = burst_s
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self.rpm: float | None = None
        self.tpm: float | None = None
        self._max_requests = self._max_tokens = self._requests = self._tokens = 1.0
        self.set_rates(requests_per_minute, tokens_per_minute)
        self._requests, self._tokens = self._max_requests, self._max_tokens  # start full

    def set_rates(self, requests_per_minute: float | None, tokens_per_minute: float | None) -> None:
        """New budgets; what is left in the buckets is kept, up to the new bucket size."""
        with self._state:
            self._refill(time.monotonic())
            self.rpm = requests_per_minute or None
            self.tpm = tokens_per_minute or None
            self._max_requests = max(1.0, (self.rpm or 0) * self._burst_s / 60)
            self._max_tokens = max(1.0, (self.tpm or 0) * self._burst_s / 60)
            self._requests = min(self._requests, self._max_requests)
            self._tokens = min(self._tokens, self._max_tokens)

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        self._updated = now
        if self.rpm:
            self._requests = min(self._max_requests, self._requests + elapsed * self.rpm / 60)
        if self.tpm:
            self._tokens = min(self._max_tokens, self._tokens + elapsed * self.tpm / 60)

    @property
    def paused_until(self) -> float:
        """`time.monotonic()` before which no request starts (0 when never paused)."""
        return self._paused_until

    def pause(self, seconds: float) -> None:
        """Hold every new request for `seconds` (a server said it is overloaded)."""
        with self._state:
            self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    def _take(self, tokens: int) -> float:
        """Take room for one request now (returns 0) or say how long to wait first."""
        with self._state:
            now = time.monotonic()
            if now < self._paused_until:
                return self._paused_until - now
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
            return wait

    async def acquire(self, tokens: int) -> int:
        """Wait for room for one request of about `tokens` tokens; returns the tokens reserved."""
        if self.tpm:
            tokens = max(1, min(tokens, int(self._max_tokens)))  # a request bigger than the bucket still gets to run
        # Nobody queued and room now (always, without rates or a pause): go, without a round trip
        # through the gate, which costs a thread switch when the waiters are on other threads.
        if self._gate.idle and self._take(tokens) <= 0:
            return tokens if self.tpm else 0
        # One waiter at a time keeps the order fair and the arithmetic simple.
        async with self._gate:
            while (wait := self._take(tokens)) > 0:
                await asyncio.sleep(wait)
        return tokens if self.tpm else 0

    def settle(self, reserved: int, used: int | None) -> None:
        """Give back (or take more of) the token budget once actual usage is known."""
        if self.tpm and used is not None:
            with self._state:
                self._refill(time.monotonic())
                self._tokens = min(self._max_tokens, self._tokens + reserved - used)
