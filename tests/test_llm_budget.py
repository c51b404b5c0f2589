"""One budget per endpoint (curate.llm.budget): concurrency, requests/min and 429 pauses are
shared by every shard running in the process, counted on the server side by the fault injector
(tests/fault_server.py, a stand-in that replays a fixed latency; it is never a model)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.llm import RetryPolicy, complete_frame
from curate.llm.budget import EndpointLimits, endpoint_budget, endpoint_identity, process_share, utilization_meter
from curate.llm.limits import LoopSafeSemaphore
from curate.orchestrate import OrchestrationConfig, ensure_llm_limit, execute_stage, make_task_runner
from curate.records import Translation, conform
from curate.runner import StageCall, summarize_result
from curate.stages import answers
from curate.stages.answers import AnswersConfig, answers_stage
from curate.workspace import StageOutput, Workspace
from tests.conftest import DATA
from tests.fault_server import FaultConfig, FaultServer
from tests.polling import wait_for


def harness(test):
    """Runs under the session's embedded Prefect server (a server start: slow)."""
    return pytest.mark.slow(pytest.mark.usefixtures("prefect_harness")(test))


@pytest.fixture
def faults():
    with FaultServer(FaultConfig(reply="fine")) as server:
        yield server


def endpoint(server: FaultServer, **kw) -> EndpointConfig:
    return EndpointConfig(**({"base_url": server.base_url, "model": "m", "timeout_s": 10.0, "max_retries": 4} | kw))


def requests(n: int, tag: str) -> pl.DataFrame:
    return pl.DataFrame({"request_id": [f"{tag}{i}" for i in range(n)], "prompt": [f"{tag} question {i}" for i in range(n)]})


def run_shards(frames: list[pl.DataFrame], ep: EndpointConfig, **kw) -> list[pl.DataFrame]:
    """Each frame on a thread of its own, all at once: the way the threads task runner runs shards
    (each `complete_frame` then has its own event loop)."""
    with ThreadPoolExecutor(max_workers=len(frames)) as pool:
        return list(pool.map(lambda df: complete_frame(df, ep, **kw), frames))


# -- the limiter itself ---------------------------------------------------------------------------
def test_loop_safe_semaphore_bounds_holders_across_threads_and_their_loops():
    slots = LoopSafeSemaphore(3)
    held, peak = 0, 0
    lock = threading.Lock()

    async def one() -> None:
        nonlocal held, peak
        async with slots:
            with lock:
                held += 1
                peak = max(peak, held)
            await asyncio.sleep(0.01)
            with lock:
                held -= 1

    async def shard() -> None:
        await asyncio.gather(*(one() for _ in range(20)))

    threads = [threading.Thread(target=asyncio.run, args=(shard(),)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3
    assert slots.in_use == 0


def test_cancelled_waiters_give_their_slot_back():
    slots = LoopSafeSemaphore(1)

    async def run() -> None:
        await slots.acquire()
        waiters = [asyncio.ensure_future(slots.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        waiters[0].cancel()  # cancelled while queued
        slots.release()  # hands the slot to waiters[1]...
        waiters[1].cancel()  # ...which is cancelled before it resumes: the slot must go on to waiters[2]
        await asyncio.wait_for(waiters[2], 2)
        assert slots.in_use == 1
        slots.release()

    asyncio.run(run())
    assert slots.in_use == 0


def test_a_worker_share_splits_the_budget_and_never_drops_below_one_request():
    ep = EndpointConfig(max_concurrency=10, requests_per_minute=600, tokens_per_minute=None)
    assert EndpointLimits.of(ep, 0.25) == EndpointLimits(2, 150.0, None)
    assert EndpointLimits.of(ep.model_copy(update={"max_concurrency": 2}), 0.25).max_concurrency == 1
    assert EndpointLimits.of(ep, 1.0) == EndpointLimits(10, 600, None)


def test_the_budget_is_keyed_by_endpoint_identity_never_by_the_key(monkeypatch):
    monkeypatch.setenv("BUDGET_TEST_KEY", "sk-secret-value")
    a = EndpointConfig(base_url="http://budget-test:1/v1/", model="m", api_key_env="BUDGET_TEST_KEY")
    b = a.model_copy(update={"base_url": "http://budget-test:1/v1", "max_concurrency": 3})
    assert endpoint_budget(a) is endpoint_budget(b)  # same endpoint, whatever its limits say
    assert "sk-secret-value" not in repr(endpoint_identity(a))
    assert endpoint_budget(a.model_copy(update={"model": "other"})) is not endpoint_budget(a)
    assert endpoint_budget(a.model_copy(update={"api_key_env": "OTHER_KEY"})) is not endpoint_budget(a)


def test_overlapping_runs_with_different_limits_get_the_strictest_until_they_finish():
    budget = endpoint_budget(EndpointConfig(base_url="http://budget-test:2/v1", model="m"))
    loose, strict = EndpointLimits(16, None, 6000.0), EndpointLimits(4, 60.0, None)
    with budget.use(loose):
        assert budget.slots.capacity == 16
        with budget.use(strict):
            assert budget.slots.capacity == 4
            assert (budget.rates.rpm, budget.rates.tpm) == (60.0, 6000.0)
        assert budget.slots.capacity == 16 and budget.rates.rpm is None


def test_the_utilization_meter_counts_slot_seconds_per_endpoint_without_credentials(faults):
    faults.config.latency_s = 0.1
    ep = endpoint(faults, max_concurrency=4, base_url=faults.base_url.replace("http://", "http://user:pw@"))
    with utilization_meter() as endpoint_use:
        run_shards([requests(8, f"meter{s}-") for s in range(2)], ep)
    ((label, use),) = endpoint_use().items()
    assert label == f"m at {faults.base_url}" and "pw" not in label
    # 16 requests, each holding a slot for at least the server's 0.1 s; never more than 4 slots busy.
    assert use["slots"] == 4 and use["busy_slot_s"] >= 16 * 0.1
    assert use["busy_slot_s"] <= 4 * use["wall_s"] and 0 < use["utilization"] <= 1.0


# -- shards against the server --------------------------------------------------------------------
def test_four_shards_at_once_never_put_more_than_max_concurrency_in_flight(faults):
    faults.config.latency_s = 0.1
    frames = [requests(24, f"shard{s}-") for s in range(4)]
    outs = run_shards(frames, endpoint(faults, max_concurrency=6))
    assert all(out["status"].to_list() == ["ok"] * 24 for out in outs)
    # Per-shard limiters would have let 4 x 6 = 24 in; one budget lets in 6, and keeps 6 busy.
    assert faults.stats()["max_in_flight"] == 6


def test_a_429_with_retry_after_on_one_shard_pauses_every_shard(faults):
    faults.config.latency_s = 0.05
    faults.config.retry_after = "1"
    faults.config.plans = {"pausing question": ["429"]}
    pausing = pl.DataFrame({"request_id": ["p"], "prompt": ["pausing question"]})
    # Three busy shards: 60 requests at 2 in flight and 50 ms each need 1.5 s without a pause.
    frames = [pausing] + [requests(20, f"busy{s}-") for s in range(3)]
    outs = run_shards(frames, endpoint(faults, max_concurrency=2), retry=RetryPolicy(base_delay_s=0.001, max_delay_s=0.001))
    assert all((out["status"] == "ok").all() for out in outs)
    assert outs[0]["attempts"].to_list() == [2]
    (refused_at,) = [t for t, kind in faults.arrivals if kind == "429"]
    # Unpaused, the busy shards send ~20 requests in that second. Paused, only what was already on
    # its way can still arrive: with 2 in flight, the other slot's request, and one more sent
    # before the client had read the 429 (a loaded machine can deliver these late, so no time cut-off).
    during_pause = [t - refused_at for t, kind in faults.arrivals if refused_at < t < refused_at + 0.95]
    assert len(during_pause) <= 2, during_pause
    assert any(t >= refused_at + 0.95 for t, kind in faults.arrivals if kind != "429")


def test_requests_per_minute_is_one_budget_across_shards(faults):
    # 600/min = 10/s with a 2 s burst of 20. Four shards of 10 requests: 20 at once, then 10 a second.
    # Per-shard buckets would have sent all 40 at once.
    # Bounds use the run's start, not the first arrival: a request reaches the server no earlier than
    # it was sent, so they hold however late a loaded machine delivers the first ones.
    start = time.monotonic()
    outs = run_shards([requests(10, f"rpm{s}-") for s in range(4)], endpoint(faults, requests_per_minute=600, max_concurrency=40))
    assert all((out["status"] == "ok").all() for out in outs)
    times = sorted(t for t, _ in faults.arrivals)
    assert len(times) == 40
    assert times[-1] - start >= 1.8  # 20 past the burst at 10/s: the last cannot be sent before ~2 s
    # Whatever arrived in the first second was sent in it: at most the burst plus a second's refill
    # (and one for rounding).
    assert sum(1 for t in times if t < start + 1.0) <= 20 + 10 + 1


# -- real stage shards, scheduled the way the flow schedules them --------------------------------------
def translations(n: int) -> pl.DataFrame:
    """`n` public deccp questions as English translations (what the answers stage reads)."""
    lines = [ln for ln in (DATA / "deccp" / "censored.txt").read_text(encoding="utf-8").splitlines() if ln.strip()][:n]
    return conform(pl.DataFrame({
        "translation_id": [f"tr{i}" for i in range(len(lines))], "question_id": [f"q{i}" for i in range(len(lines))],
        "source_language": ["en"] * len(lines), "language": ["en"] * len(lines), "text": lines, "status": ["ok"] * len(lines),
    }), Translation)


def answers_noting_budget(translations: pl.DataFrame, config: AnswersConfig, **kwargs) -> StageOutput:
    """The answers stage, plus which process ran the shard and what part of the budget it had."""
    output = answers_stage(translations, config, **kwargs)
    budget = endpoint_budget(config.generator)
    output.tables["budget"] = pl.DataFrame({"pid": [os.getpid()], "share": [process_share()],
                                            "max_concurrency": [budget.limits.max_concurrency]})
    return output


def run_answers_flow(tmp_path: Path, server: FaultServer, orch: OrchestrationConfig, max_concurrency: int,
                     *, first_text: str | None = None, timeout_s: float = 10.0) -> tuple[dict, pl.DataFrame, dict]:
    """Server stats, the shards' budget notes, and the stage's manifest report."""
    from prefect import flow

    ws = Workspace(tmp_path / "ws")
    rows = translations(48)
    if first_text is not None:
        rows = rows.with_columns(text=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit(first_text)).otherwise("text"))
    ws.run_stage("translate", lambda: StageOutput(tables={"translations": rows}))
    config = AnswersConfig(generator=endpoint(server, max_concurrency=max_concurrency, timeout_s=timeout_s), candidates_per_prompt=2)
    # The declared answers stage (sharded by translations, uses the LLM), noting its budget.
    call = StageCall(dataclasses.replace(answers.STAGE, run=answers_noting_budget), config,
                     {"translations": "translate/translations"})

    @flow
    def answers_on_slots() -> dict:
        ensure_llm_limit(orch)
        with make_task_runner(orch) as runner:
            result = execute_stage(ws, call, orch, runner=runner)
            return summarize_result(result) | {"report": result.manifest["report"]}

    summary = answers_on_slots()
    assert summary["rows"]["candidates"] + summary["rows"]["rejects"] == 96  # every request accounted for
    return server.stats(), ws.read("answers/budget"), summary["report"]


@harness
def test_answers_shards_on_four_slots_never_exceed_max_concurrency_at_the_server(tmp_path, faults):
    faults.config.latency_s = 0.1
    orch = OrchestrationConfig(task_runner="threads", max_workers=4, llm_slots=4, shard_size=6,
                               llm_limit_name=f"budget-{tmp_path.name}")
    stats, budget, report = run_answers_flow(tmp_path, faults, orch, max_concurrency=6)
    assert budget.height == 8 and budget["pid"].unique().to_list() == [os.getpid()]  # 8 shards, here
    assert stats["completed"] == 96
    assert stats["max_in_flight"] == 6  # never above the setting, and the four shards keep it full
    # The stage's manifest says how busy it kept the endpoint: 96 requests of at least 0.1 s each.
    (use,) = report["endpoint_utilization"].values()
    assert use["slots"] == 6 and use["busy_slot_s"] >= 96 * 0.1
    assert 0 < use["utilization"] <= 1.0


@harness
@pytest.mark.timeout(240)
def test_shards_in_worker_processes_split_the_budget_between_them(tmp_path, faults):
    faults.config.latency_s = 0.2
    # Two worker processes, so two shards at once: each worker may have 3 of the 6 in flight.
    orch = OrchestrationConfig(task_runner="processes", max_workers=2, llm_slots=4, shard_size=6,
                               llm_limit_name=f"budget-{tmp_path.name}")
    stats, budget, _ = run_answers_flow(tmp_path, faults, orch, max_concurrency=6)
    assert os.getpid() not in budget["pid"].to_list()
    assert budget["share"].unique().to_list() == [0.5]
    assert budget["max_concurrency"].unique().to_list() == [3]
    assert stats["completed"] == 96
    assert stats["max_in_flight"] <= 6


@harness
def test_a_shard_held_up_at_the_endpoint_does_not_hold_up_the_next_shards(tmp_path, faults):
    """A rolling window, not waves: with two shard slots and one request of the first shard held by
    the server, every other shard of the stage runs and finishes through the other slot."""
    faults.config.latency_s = 0.02
    faults.config.plans = {"held question": ["hold"]}
    orch = OrchestrationConfig(task_runner="threads", max_workers=4, llm_slots=2, shard_size=6,
                               llm_limit_name=f"budget-{tmp_path.name}")
    rest_done_while_held = threading.Event()

    def rest_done() -> bool:
        stats = faults.stats()
        held = stats["faults"].get("hold", 0)
        return held > 0 and stats["completed"] + held >= 96

    def release_once_the_rest_is_done() -> None:
        try:
            wait_for(rest_done, "every other request answered while one is held", timeout=120, interval=0.05)
            rest_done_while_held.set()
        except AssertionError:
            pass  # the assertion below says what went wrong
        finally:
            faults.release_held()

    releaser = threading.Thread(target=release_once_the_rest_is_done, daemon=True)
    releaser.start()
    stats, budget, _ = run_answers_flow(tmp_path, faults, orch, max_concurrency=4, first_text="held question: who decides?",
                                     timeout_s=180)
    releaser.join()
    assert rest_done_while_held.is_set(), "the other shards waited for the held one"
    assert budget.height == 8 and stats["completed"] == 96


def test_tokens_per_minute_is_one_budget_across_shards(faults):
    # 12,000/min = 200 tokens/s with a 2 s bucket of 400. Four shards of 6 requests of ~30 tokens
    # (the injector bills body bytes / 4), each reserving ~56 first (prompt / 3 + max_tokens): one
    # shard alone fits in a bucket, so per-shard buckets would have let all four through at once.
    start = time.monotonic()  # see the requests-per-minute test: bounds from the run's start
    outs = run_shards([requests(6, f"tpm{s}-") for s in range(4)],
                      endpoint(faults, tokens_per_minute=12000, max_concurrency=40, max_tokens=50))
    assert all((out["status"] == "ok").all() for out in outs)
    used = sum(int(out["prompt_tokens"].sum() + out["completion_tokens"].sum()) for out in outs)
    assert used > 600
    # Everything past the bucket reached the server at 200 tokens/s at most.
    times = sorted(t for t, _ in faults.arrivals)
    assert times[-1] - start >= 0.8 * (used - 400) / 200


@pytest.mark.slow
def test_the_issue_target_256_in_flight_at_most_with_four_shard_slots(faults):
    # The full-size setting: max_concurrency = 256 and four shards at once, each with more than
    # enough requests to fill the endpoint alone.
    faults.config.latency_s = 0.5
    outs = run_shards([requests(300, f"big{s}-") for s in range(4)], endpoint(faults, max_concurrency=256, timeout_s=60))
    assert all((out["status"] == "ok").all() for out in outs)
    assert faults.stats()["max_in_flight"] == 256
