"""One LLM event loop per process, with one connection pool per endpoint (curate.llm.connections):
shards on threads share the pool, and nothing is left running once the calls are done. Connections
and requests in flight are counted on the server side by the fault injector (tests/fault_server.py,
a stand-in that replays a fixed latency; it is never a model)."""

from __future__ import annotations

import asyncio
import threading
from contextlib import AsyncExitStack

import polars as pl
from curate.config import EndpointConfig
from curate.llm import acomplete_frame, complete_frame, connections
from curate.shards import map_shards
from curate.workspace import StageOutput
from tests import test_llm_budget
from tests.test_llm_budget import endpoint, requests

faults = test_llm_budget.faults  # the fault injector fixture, shared with the budget tests


def llm_loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == connections.THREAD_NAME]


def run_shards_on_four_threads(faults, max_concurrency: int, n: int, shard_size: int, tag: str) -> dict:
    """n requests in shards through `map_shards` on 4 threads, all answered in order; the server's stats."""
    ep = endpoint(faults, max_concurrency=max_concurrency)

    def ask(requests: pl.DataFrame) -> StageOutput:
        return StageOutput(tables={"results": complete_frame(requests, ep, stage=tag)})

    out = map_shards(ask, requests(n, tag), shard_input="requests", shard_size=shard_size, max_in_flight=4)
    results = out.tables["results"]
    assert results.height == n and (results["status"] == "ok").all()
    assert results["request_id"].to_list() == [f"{tag}{i}" for i in range(n)]
    return faults.stats()


def test_shards_on_four_threads_share_one_connection_pool_and_leave_no_thread(faults):
    faults.config.latency_s = 0.05
    stats = run_shards_on_four_threads(faults, max_concurrency=8, n=96, shard_size=12, tag="pooled")
    assert stats["max_in_flight"] <= 8
    # One pool of 8 for the whole stage. A pool per shard (8 shards, each closing its own at the
    # end) opens a fresh set of connections for every shard: well over 8.
    assert stats["connections"] <= 8, stats
    assert llm_loop_threads() == []


def test_calls_one_after_another_outside_a_stage_leave_no_thread_or_open_client(faults):
    ep = endpoint(faults, max_concurrency=4)
    for round_ in range(3):
        out = complete_frame(requests(4, f"round{round_}-"), ep)
        assert (out["status"] == "ok").all()
        assert llm_loop_threads() == []
    assert connections._running is None


def test_a_frame_answered_by_the_cache_starts_no_loop(faults, tmp_path):
    from curate.llm import LLMCache

    ep = endpoint(faults)
    with LLMCache(tmp_path / "cache.sqlite") as cache:
        complete_frame(requests(3, "cached"), ep, cache=cache)
        sent = faults.stats()["requests"]
        with connections.held():
            out = complete_frame(requests(3, "cached"), ep, cache=cache)
            assert connections._running is None  # nothing to send, so no loop was started
        assert out["cached"].all() and faults.stats()["requests"] == sent


def test_awaiting_on_a_loop_of_ones_own_uses_a_client_of_its_own(faults):
    ep = endpoint(faults, max_concurrency=4)

    async def main() -> pl.DataFrame:
        return await acomplete_frame(requests(5, "own-loop"), ep)

    out = asyncio.run(main())
    assert (out["status"] == "ok").all()
    assert llm_loop_threads() == []


def test_an_interrupted_caller_cancels_its_calls_and_the_loop_still_stops(faults):
    ep = endpoint(faults, max_concurrency=2)

    async def never_done() -> None:
        await asyncio.Event().wait()

    with connections.held():
        result: dict[str, BaseException] = {}

        def caller() -> None:
            try:
                connections.run(never_done())
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                result["exc"] = exc

        thread = threading.Thread(target=caller)
        thread.start()
        # The loop is shared: another caller's frame goes through while the first waits.
        out = complete_frame(requests(2, "alongside"), ep)
        assert (out["status"] == "ok").all()
        assert thread.is_alive()
    # Letting go of the last hold cancels what is still running there and stops the thread.
    thread.join(timeout=30)
    assert not thread.is_alive() and "exc" in result
    assert llm_loop_threads() == []


def test_a_large_concurrency_is_split_into_pools_of_at_most_32_that_add_up_to_it():
    ep = EndpointConfig(base_url="http://127.0.0.1:9/v1", model="m", max_concurrency=80)

    async def lease_all() -> tuple[list[int], list[int]]:
        async with connections.ClientGroup(ep, None) as group:
            sizes = list(group.sizes)
            async with AsyncExitStack() as stack:
                leased = [await stack.enter_async_context(group.lease()) for _ in range(80)]
                per_client = [sum(c is client for c in leased) for client in group.clients]
            assert group._room == sizes  # every lease handed back
            return sizes, per_client

    sizes, per_client = asyncio.run(lease_all())
    assert sizes == [27, 27, 26]
    # C leases at once (each caller holds one of the endpoint's C slots) never ask a pool for more
    # connections than it has, so no request waits inside a pool.
    assert per_client == sizes


def test_shards_over_several_pools_keep_the_endpoint_budget_and_open_no_more_connections(faults):
    faults.config.latency_s = 0.2
    stats = run_shards_on_four_threads(faults, max_concurrency=40, n=320, shard_size=40, tag="pools")  # two pools of 20
    assert 20 < stats["max_in_flight"] <= 40, stats  # both pools were used at once, the budget held
    assert stats["connections"] <= 40, stats
    assert llm_loop_threads() == []
