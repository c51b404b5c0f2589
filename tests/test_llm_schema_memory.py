"""An endpoint that refuses `response_format: json_schema` is asked once per process, not once
per call: after the first refusal every call (of this run, of later runs, of runs on other threads)
goes out in the format that works. Counted on the real llama.cpp server (which answers json_schema
with an immediate HTTP 500 and takes llama.cpp's json_object) and on the fault injector."""

from __future__ import annotations

import logging
import uuid

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.llm import LLMCache, complete_frame
from tests.fault_server import FaultConfig, FaultServer

HTTP_LOGGERS = ("httpx", "httpx2")  # the openai SDK's HTTP client, by the name it logs under
SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}


def requests(n: int, tag: str) -> pl.DataFrame:
    return pl.DataFrame({"request_id": [f"{tag}{i}" for i in range(n)],
                         "prompt": [f"Rate the number {i} ({tag}) from 0 to 4. Reply with JSON {{\"score\": <int>}}." for i in range(n)]})


def fresh(endpoint: EndpointConfig, **kw) -> EndpointConfig:
    """The same server under an endpoint identity no earlier test of this process has used (the
    identity includes the key's variable name), so nothing is remembered for it yet."""
    return endpoint.model_copy(update={"api_key_env": f"CURATE_TEST_KEY_{uuid.uuid4().hex[:8].upper()}", **kw})


def sent_formats(records: list[logging.LogRecord]) -> list[str]:
    """The HTTP requests the SDK's HTTP client logged (one INFO line each, with the status)."""
    return [r.getMessage() for r in records if r.name in HTTP_LOGGERS and "chat/completions" in r.getMessage()]


@pytest.mark.slow
@pytest.mark.llm
def test_real_server_is_asked_for_json_schema_once_per_process(llm_endpoint, caplog):
    endpoint = fresh(llm_endpoint, max_concurrency=4)
    for name in HTTP_LOGGERS:
        caplog.set_level(logging.INFO, logger=name)
    first = complete_frame(requests(6, "a"), endpoint, response_schema=SCHEMA)
    after_first = len(sent_formats(caplog.records))
    second = complete_frame(requests(3, "b"), endpoint, response_schema=SCHEMA)
    lines = sent_formats(caplog.records)
    assert first["status"].to_list() == ["ok"] * 6 and second["status"].to_list() == ["ok"] * 3, first["error"].to_list()
    refused = [line for line in lines if " 500 " in line]
    # 6 structured calls: 6 + 1 requests (one refused json_schema probe), then a later run: 3, no probe.
    assert len(refused) == 1
    invalid = int((first["attempts"] - 1).sum())  # a resampled invalid answer is a request of its own
    assert after_first == 6 + 1 + invalid
    assert len(lines) - after_first == 3 + int((second["attempts"] - 1).sum())


def test_fault_injector_counts_one_probe_per_refused_format(tmp_path):
    with FaultServer(FaultConfig(reject_response_format=True, reply='{"score": 3}')) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model="m", timeout_s=5.0, max_retries=2, max_concurrency=8)
        cache = LLMCache(tmp_path / "cache.sqlite")
        out = complete_frame(requests(20, "a"), endpoint, response_schema=SCHEMA, cache=cache)
        assert out["status"].to_list() == ["ok"] * 20 and out["parsed"].to_list() == ['{"score": 3}'] * 20
        # json_schema refused once, json_object refused once, then 20 plain requests.
        assert server.stats()["requests"] == 20 + 2
        assert server.stats()["faults"] == {"reject_schema": 2}
        # The cache still answers the same calls; new calls go out without a probe.
        again = complete_frame(requests(20, "a"), endpoint, response_schema=SCHEMA, cache=cache)
        assert again["cached"].all() and server.stats()["requests"] == 22
        complete_frame(requests(5, "b"), endpoint, response_schema=SCHEMA, cache=cache)
        assert server.stats()["requests"] == 27
        cache.close()


def test_demanded_json_schema_is_still_an_error_row(tmp_path):
    with FaultServer(FaultConfig(reject_response_format=True, reply='{"score": 3}')) as server:
        endpoint = EndpointConfig(base_url=server.base_url, model="m", timeout_s=5.0, max_concurrency=4,
                                  structured_output="json_schema")
        out = complete_frame(requests(3, "s"), endpoint, response_schema=SCHEMA)
        assert out["status"].to_list() == ["error"] * 3
        assert all(e.startswith("schema_unsupported") for e in out["error"].to_list())
        assert server.stats()["requests"] == 3  # demanded: each call asks, none falls back


def test_a_probe_that_times_out_does_not_serialize_the_run(tmp_path):
    # Every request's first attempt stalls past the client's timeout. The probe's timeout says
    # nothing about the format, so the run's other calls must then go out together, not one
    # probe (one timeout) at a time.
    with FaultServer(FaultConfig(plan=["slow"], slow_s=1.0, reply='{"score": 3}')) as server:
        endpoint = fresh(EndpointConfig(base_url=server.base_url, model="m", timeout_s=0.5, max_retries=2,
                                        max_concurrency=8))
        out = complete_frame(requests(8, "t"), endpoint, response_schema=SCHEMA)
        assert out["status"].to_list() == ["ok"] * 8, out["error"].to_list()
        assert server.stats()["max_in_flight"] >= 4
