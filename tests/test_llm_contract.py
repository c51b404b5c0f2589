"""Contract tests against the real local model server (llama-cpp-python serving SmolLM2 under
its short name), through the public API and the CLI. Outputs are kept to a few tokens: the model is
tiny and the machine is shared, so these check the wire contract, not answer quality."""

from __future__ import annotations

import json
import subprocess
import time

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.llm import LLMCache, complete_frame, usage_summary

pytestmark = [pytest.mark.slow, pytest.mark.llm]


def test_completions_come_back_in_order_with_usage(llm_endpoint, tmp_path):
    reqs = pl.DataFrame({
        "request_id": ["capital", "color"],
        "messages": [
            [{"role": "system", "content": "Answer in a few words."}, {"role": "user", "content": "What is the capital of France?"}],
            [{"role": "user", "content": "Name one color."}],
        ],
    })
    cache = LLMCache.for_workspace(tmp_path)
    out = complete_frame(reqs, llm_endpoint, stage="contract", cache=cache,
                         prices={llm_endpoint.model: {"usd_per_1m_prompt_tokens": 1.0, "usd_per_1m_completion_tokens": 2.0}})
    assert out["request_id"].to_list() == ["capital", "color"]
    assert out["status"].to_list() == ["ok", "ok"], out["error"].to_list()
    assert all(c for c in out["content"]) and set(out["finish_reason"]) <= {"stop", "length"}
    assert (out["prompt_tokens"] > 0).all() and (out["completion_tokens"] > 0).all()
    assert (out["completion_tokens"] <= llm_endpoint.max_tokens).all()
    assert out["cost_usd"].null_count() == 0 and (out["cost_usd"] > 0).all()

    again = complete_frame(reqs, llm_endpoint, stage="other-stage", cache=cache)
    assert again["cached"].all() and again["content"].to_list() == out["content"].to_list()
    summary = usage_summary(again, "other-stage", {llm_endpoint.model: {"usd_per_1m_prompt_tokens": 1.0}})
    assert summary["calls_made"] == 0 and summary["cached"] == 2 and summary["cost_usd"] == 0


def test_max_tokens_cut_is_reported_as_length(llm_endpoint):
    out = complete_frame(pl.DataFrame({"request_id": ["long"], "prompt": ["Write a long story about a dragon."]}),
                         llm_endpoint, overrides={"max_tokens": 3})
    row = out.row(0, named=True)
    assert row["status"] == "ok" and row["finish_reason"] == "length" and row["completion_tokens"] == 3


def test_structured_output_is_constrained_and_parsed(llm_endpoint):
    schema = {"type": "object", "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}},
              "required": ["color"]}
    out = complete_frame(pl.DataFrame({"request_id": ["json"], "prompt": ["Pick a color. Reply as JSON."]}),
                         llm_endpoint, response_schema=schema, overrides={"max_tokens": 24, "temperature": 0.0})
    row = out.row(0, named=True)
    assert row["status"] == "ok", row["error"]
    assert json.loads(row["parsed"])["color"] in {"red", "green", "blue"}


def test_context_overflow_is_an_error_row_without_retry(llm_endpoint):
    huge = "word " * 12000  # beyond the server's 8192-token context
    out = complete_frame(pl.DataFrame({"request_id": ["huge", "fine"], "prompt": [huge, "Say yes."]}), llm_endpoint,
                         overrides={"max_tokens": 4})
    assert out["status"].to_list() == ["error", "ok"]
    assert out["error"][0].startswith(("context_length", "http_400")) and out["attempts"][0] == 1


def test_cli_ping_talks_to_the_server(llm_server, tmp_path):
    env = {"CURATE__LLM__BASE_URL": llm_server.base_url, "CURATE__WORKSPACE": str(tmp_path / "ws"),
           "CURATE_CONFIG": "/nonexistent.toml"}
    result = CliRunner().invoke(app, ["llm", "ping", "--max-tokens", "8"], env=env)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and "answer:" in result.output
    assert llm_server.served_model in {"smollm2", "qwen0.5b", "qwen1.5b", "unknown"}


def test_server_script_is_idempotent_and_reports_status(llm_server, repo_root):
    if llm_server.base_url != "http://127.0.0.1:8080/v1":
        pytest.skip("external endpoint")
    script = repo_root / "scripts" / "llm-server.sh"
    started = time.perf_counter()
    again = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already serving" in again.stderr
    status = subprocess.run(["bash", str(script), "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "running on http://127.0.0.1:8080/v1" in status.stdout
    install = subprocess.run(["bash", str(script), "install"], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    assert time.perf_counter() - started < 60  # everything cached: no build, no download


def test_empty_request_frame_gives_an_empty_result(llm_endpoint):
    out = complete_frame(pl.DataFrame({"request_id": [], "prompt": []}, schema={"request_id": pl.String, "prompt": pl.String}),
                         llm_endpoint)
    assert out.height == 0 and "status" in out.columns
