"""One event loop per process for LLM calls, and on it one connection pool per endpoint.

An httpx connection pool belongs to the event loop it was made on. When every shard ran
`complete_frame` on its own thread with its own loop, each shard held a pool of its own: four
shards sharing an endpoint budget of 256 kept up to four pools of idle connections, and httpcore
scans every pooled connection on each request's start and finish (docs/benchmarks.md, "Where the
client's CPU goes"). Instead, `complete_frame` prepares its requests on the caller's thread and
sends them on this one loop thread, where every shard and stage of the process draws on the same
`openai.AsyncOpenAI` client (and pool) per endpoint.

Lifetime: the thread starts on the first send and runs while anyone holds the loop (`held()`:
each `complete_frame` call, and `map_shards` around a whole stage, so the pool outlives a shard).
When the last holder lets go, the clients are closed and the thread is joined, so nothing lingers
after a CLI run or a test. A forked child starts with no loop of its own (the parent's thread is
not copied by fork).

Pools of at most `POOL_CONNECTIONS`: httpcore walks every connection of a pool on each request's
start and finish (and probes each idle one's socket): with one pool of 256 connections that walk
took about a third of the client's CPU per request. An endpoint's "client" is
therefore a `ClientGroup`: ceil(C / 32) `AsyncOpenAI` clients whose pools add up to C, and each
request leases the one with the most free connections (docs/benchmarks.md, "Client CPU per
request").
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from curate.config import EndpointConfig
from curate.llm.budget import endpoint_identity

if TYPE_CHECKING:
    import openai

T = TypeVar("T")
THREAD_NAME = "curate-llm-loop"
_NO_KEY = "sk-no-key-required"  # local servers ignore it; the SDK insists on some value
# Connections per pool: small enough that httpcore's walk over a pool on every request's start
# and finish stays cheap, large enough that a small concurrency keeps one pool (and one client).
POOL_CONNECTIONS = 32


def openai_sdk():
    """The openai SDK, imported on the first call: it is heavy (~0.5 s) and most commands never call an endpoint."""
    import openai

    return openai


def new_client(endpoint: EndpointConfig, secret: str | None, connections: int | None = None) -> openai.AsyncOpenAI:
    """An `AsyncOpenAI` for `endpoint` with a pool of `connections` (default: its
    max_concurrency), bound to the running loop (its pool lives there)."""
    openai = openai_sdk()
    size = connections or endpoint.max_concurrency
    # The SDK's default pool keeps only 100 idle connections; at higher concurrency that means a
    # new TCP connection per request. Size the pool to the concurrency bound instead.
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(max_connections=size, max_keepalive_connections=size)
    return openai.AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=secret or _NO_KEY,
        max_retries=0,  # retries are ours: they must honour the shared rate limiter and pauses
        timeout=endpoint.timeout_s,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )


class ClientGroup:
    """An endpoint's clients on one loop: pools of at most POOL_CONNECTIONS that add up to its
    max_concurrency. `lease()` lends the client with the most free connections; a caller holding
    one of the endpoint's C budget slots always finds one with room (fewer than C requests are
    in flight besides its own). Used on its loop only, so the counts need no lock."""

    def __init__(self, endpoint: EndpointConfig, secret: str | None):
        total = endpoint.max_concurrency
        count = -(-total // POOL_CONNECTIONS)
        sizes = [total // count + (1 if i < total % count else 0) for i in range(count)]
        self.sizes = tuple(sizes)
        self.clients = [new_client(endpoint, secret, size) for size in sizes]
        self._room = sizes

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[openai.AsyncOpenAI]:
        pick = max(range(len(self._room)), key=self._room.__getitem__)
        self._room[pick] -= 1
        try:
            yield self.clients[pick]
        finally:
            self._room[pick] += 1

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    async def __aenter__(self) -> ClientGroup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _client_key(endpoint: EndpointConfig, secret: str | None) -> tuple[Any, ...]:
    # The key's digest, not the key, so the registry holds no second copy of the secret.
    digest = hashlib.sha256((secret or "").encode()).hexdigest()
    return (*endpoint_identity(endpoint), digest, endpoint.max_concurrency, endpoint.timeout_s)


class _LLMLoop:
    """The loop thread and its clients. Clients are created and used on the loop thread only."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.clients: dict[tuple[Any, ...], ClientGroup] = {}
        self.thread = threading.Thread(target=self._serve, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def client(self, endpoint: EndpointConfig, secret: str | None) -> ClientGroup:
        key = _client_key(endpoint, secret)
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = ClientGroup(endpoint, secret)
        return client

    async def _close(self) -> None:
        # Runs cancelled by an interrupted caller may still be unwinding: let them finish first.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        for client in self.clients.values():
            await client.close()
        self.clients.clear()
        await asyncio.get_running_loop().shutdown_asyncgens()
        # Name lookups ran on the loop's default executor: join its threads too.
        await asyncio.get_running_loop().shutdown_default_executor()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


_lock = threading.Lock()
_holders = 0
_running: _LLMLoop | None = None


def _forget_after_fork() -> None:
    global _lock, _holders, _running
    _lock, _holders, _running = threading.Lock(), 0, None


os.register_at_fork(after_in_child=_forget_after_fork)


@contextmanager
def held() -> Iterator[None]:
    """Keep the process's LLM loop, and its connection pools, alive inside the block (it starts
    on the first `run`, not here, so a stage that never calls an endpoint starts no thread)."""
    global _holders, _running
    with _lock:
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            stopping, _running = (_running, None) if _holders == 0 else (None, _running)
        if stopping is not None:
            stopping.stop()


def on_loop_thread() -> bool:
    running = _running
    return running is not None and threading.current_thread() is running.thread


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the process's LLM loop and wait for it (call inside `held()`). If the wait is
    interrupted, the coroutine is cancelled."""
    global _running
    if on_loop_thread():
        coro.close()
        raise RuntimeError("complete_frame was called from the LLM loop itself; await acomplete_frame there instead")
    with _lock:
        if _holders < 1:
            coro.close()
            raise RuntimeError("run() outside held()")
        if _running is None:
            _running = _LLMLoop()
        loop = _running.loop
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def shared_client(endpoint: EndpointConfig, secret: str | None) -> ClientGroup | None:
    """The process-wide clients of `endpoint` when called on the LLM loop; None on any other loop
    (a caller awaiting `acomplete_frame` on a loop of its own gets clients of its own)."""
    running = _running
    if running is None or threading.current_thread() is not running.thread:
        return None
    return running.client(endpoint, secret)
