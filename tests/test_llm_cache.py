"""The persistent request cache: reuse across runs and stages, refresh, keys, and resume after
kill -9 (a subprocess killed mid-run; the rerun repeats no completed call and loses no row).
The endpoint is the fault injector with no faults, so every request is counted exactly."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import EndpointConfig
from curate.llm import LLMCache, RetryPolicy, complete_frame
from tests.fault_server import FaultConfig, FaultServer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server():
    with FaultServer(FaultConfig(reply="cached answer")) as s:
        yield s


def ep(server: FaultServer, **kw) -> EndpointConfig:
    return EndpointConfig(**({"base_url": server.base_url, "model": "m", "timeout_s": 5.0} | kw))


def frame(n: int, **extra) -> pl.DataFrame:
    return pl.DataFrame({"request_id": [f"r{i}" for i in range(n)], "prompt": [f"prompt {i}" for i in range(n)], **extra})


def test_rerun_and_other_stages_reuse_the_cache(server, tmp_path):
    cache = LLMCache.for_workspace(tmp_path)
    first = complete_frame(frame(5), ep(server), stage="questions", cache=cache)
    assert not first["cached"].any() and server.stats()["requests"] == 5
    again = complete_frame(frame(5), ep(server), stage="translate", cache=LLMCache.for_workspace(tmp_path))
    assert again["cached"].all() and server.stats()["requests"] == 5
    assert again.drop("cached").equals(first.drop("cached"))


def test_refresh_asks_again_and_replaces_the_entry(server, tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    complete_frame(frame(2), ep(server), cache=cache)
    server.config.reply = "fresh answer"
    out = complete_frame(frame(2), ep(server), cache=cache, refresh=True)
    assert out["content"].to_list() == ["fresh answer"] * 2 and not out["cached"].any()
    assert complete_frame(frame(2), ep(server), cache=cache)["content"].to_list() == ["fresh answer"] * 2
    assert server.stats()["requests"] == 4


def test_key_covers_candidate_index_params_and_model(server, tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    same_prompt = pl.DataFrame({"request_id": ["a"] * 3, "prompt": ["same"] * 3, "candidate_index": [0, 1, 2]})
    out = complete_frame(same_prompt, ep(server), cache=cache)
    assert out["candidate_index"].to_list() == [0, 1, 2] and not out["cached"].any()
    complete_frame(same_prompt, ep(server), cache=cache, overrides={"max_tokens": 7})
    complete_frame(same_prompt, ep(server, model="other"), cache=cache)
    assert cache.stats()["entries"] == 9 and server.stats()["requests"] == 9


def test_identical_requests_in_one_frame_make_one_call(server):
    dup = pl.DataFrame({"request_id": ["x", "y"], "prompt": ["same", "same"]})
    out = complete_frame(dup, ep(server))
    assert out["cached"].to_list() == [False, True] and server.stats()["requests"] == 1


def test_failed_calls_are_not_cached_so_a_rerun_retries_them(server, tmp_path):
    cache = LLMCache(tmp_path / "c.sqlite")
    server.config.plans = {"prompt 1": ["500"] * 3}
    out = complete_frame(frame(2), ep(server, max_retries=1), cache=cache, retry=RetryPolicy(base_delay_s=0.01))
    assert out["status"].to_list() == ["ok", "error"]
    again = complete_frame(frame(2), ep(server, max_retries=1), cache=cache, retry=RetryPolicy(base_delay_s=0.01))
    assert again["status"].to_list() == ["ok", "ok"] and again["cached"].to_list() == [True, False]


def test_system_prompt_is_folded_into_the_user_turn_by_default(server):
    msgs = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]]
    complete_frame(pl.DataFrame({"request_id": ["s"], "messages": msgs}), ep(server))
    keys = list(server.attempts)
    complete_frame(pl.DataFrame({"request_id": ["s"], "messages": msgs}), ep(server), overrides={"fold_system_prompt": False})
    assert len(server.attempts) == 2 and keys[0] in server.attempts
    bodies = server.bodies
    folded, kept = (json.loads(b)["messages"] for b in bodies)
    assert folded == [{"role": "user", "content": "Be brief.\n\nHi"}]
    assert kept[0]["role"] == "system"
    assert json.loads(bodies[0])["temperature"] == 0.6 and json.loads(bodies[0])["top_p"] == 0.95


@pytest.mark.parametrize(
    ("df", "message"),
    [
        (pl.DataFrame({"prompt": ["x"]}), "request_id"),
        (pl.DataFrame({"request_id": ["a"], "text": ["x"]}), "prompt or a messages"),
        (pl.DataFrame({"request_id": ["a", "b"], "prompt": ["x", None]}), "row 2"),
        (pl.DataFrame({"request_id": ["a", "a"], "prompt": ["x", "y"]}), "duplicate request_id 'a'"),
    ],
)
def test_malformed_request_frames_are_rejected_clearly(df, message):
    with pytest.raises(ValueError, match=message):
        complete_frame(df, EndpointConfig(base_url="http://127.0.0.1:9/v1"))


def _cli_env(server: FaultServer, workspace: Path) -> dict[str, str]:
    return {**os.environ, "CURATE__WORKSPACE": str(workspace), "CURATE__LLM__BASE_URL": server.base_url,
            "CURATE__LLM__MODEL": "m", "CURATE__LLM__MAX_CONCURRENCY": "4", "CURATE_CONFIG": "/nonexistent.toml"}


def test_kill_9_mid_run_then_rerun_repeats_no_completed_call_and_loses_no_row(server, tmp_path):
    n = 100
    server.config.latency_s = 0.2  # 4 in flight: ~20 calls/s, a wide window for the kill to land mid-run
    reqs = tmp_path / "requests.jsonl"
    frame(n).write_ndjson(reqs)
    workspace, out = tmp_path / "ws", tmp_path / "out.parquet"
    env = _cli_env(server, workspace)
    cmd = [sys.executable, "-m", "curate", "llm", "batch", str(reqs), str(out), "--quiet"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    db = workspace / "cache" / "llm-cache.sqlite"
    # Wait for the state the kill needs (half the calls committed), however slowly the child starts on
    # a loaded box (the old 60 s bound ran out before its first call at load 14); the bound only catches a hang.
    deadline = time.monotonic() + 600
    committed = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    committed = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
            except sqlite3.OperationalError:  # created but its tables not yet
                committed = 0
            if committed >= n // 2:
                break
        time.sleep(0.02)
    assert proc.poll() is None, f"run finished before the kill: {proc.communicate()}"
    assert committed >= n // 2, f"only {committed} calls committed when the wait gave up"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing half-written

    with sqlite3.connect(db) as conn:
        done_before = {k for (k,) in conn.execute("SELECT key FROM calls")}
    assert n // 2 <= len(done_before) < n
    server.reset()
    result = CliRunner().invoke(app, ["llm", "batch", str(reqs), str(out), "--quiet"], env=_cli_env(server, workspace))
    assert result.exit_code == 0, result.output
    df = pl.read_parquet(out)
    assert df.height == n and df["request_id"].to_list() == [f"r{i}" for i in range(n)]
    assert (df["status"] == "ok").all()
    assert df["cached"].sum() == len(done_before)
    assert server.stats()["requests"] == n - len(done_before)  # no completed call asked again


def test_cli_usage_cache_stats_and_clear(server, tmp_path):
    workspace = tmp_path / "ws"
    reqs = tmp_path / "r.jsonl"
    frame(3).write_ndjson(reqs)
    runner, env = CliRunner(), _cli_env(server, workspace)
    assert runner.invoke(app, ["llm", "batch", str(reqs), str(tmp_path / "o.parquet"), "--stage", "answers", "--quiet"],
                         env=env).exit_code == 0
    usage = runner.invoke(app, ["llm", "usage", "--json"], env=env)
    assert usage.exit_code == 0
    rows = json.loads(usage.output)
    assert rows[0]["stage"] == "answers" and rows[0]["calls"] == 3 and rows[0]["prompt_tokens"] > 0
    stats = runner.invoke(app, ["llm", "cache-stats"], env=env)
    assert json.loads(stats.output)["entries"] == 3
    cleared = runner.invoke(app, ["llm", "cache-clear", "--yes"], env=env)
    assert "deleted 3" in cleared.output


def test_cli_batch_names_the_file_and_field_on_bad_input(server, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "no id"}\n')
    result = CliRunner().invoke(app, ["llm", "batch", str(bad), str(tmp_path / "o.parquet")], env=_cli_env(server, tmp_path / "ws"))
    assert result.exit_code != 0
    assert "bad.jsonl" in str(result.exception) and "request_id" in str(result.exception)


def test_cache_travels_to_worker_processes_by_path(server, tmp_path):
    import pickle

    cache = LLMCache(tmp_path / "c.sqlite")
    complete_frame(frame(2), ep(server), cache=cache)
    copy = pickle.loads(pickle.dumps(cache))  # what Dask/Prefect do to task arguments
    out = complete_frame(frame(2), ep(server), cache=copy)
    assert out["cached"].all() and server.stats()["requests"] == 2


def test_n_is_refused_in_favour_of_candidate_rows(server):
    with pytest.raises(ValueError, match="candidate_index"):
        complete_frame(frame(1), ep(server), overrides={"n": 4})
