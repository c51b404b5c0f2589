"""Flows against a real local Prefect server: a run killed with SIGKILL and resumed, incremental
reruns, and deployments registered by `curate serve` with one run triggered through the server.

The LLM stage here talks to tests/fault_server.py, the fault injector, used only for what a real
model server will not do on demand: answer with a fixed latency (so the kill lands mid-stage
deterministically) and count every request it receives (so "nothing is asked twice" is checked).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from curate.workspace import Workspace
from tests.fault_server import FaultConfig, FaultServer
from tests.polling import wait_for

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
REFUSAL = "I'm sorry, but I can't help with that request."


def write_config(tmp_path: Path, seeds: list[Path], base_url: str = "http://127.0.0.1:9/v1", extra: str = "") -> Path:
    path = tmp_path / "curate.toml"
    path.write_text(
        f'workspace = "{tmp_path / "ws"}"\n'
        'languages = ["en"]\n'
        "[llm]\n"
        f'base_url = "{base_url}"\n'
        "max_concurrency = 2\n"
        "max_retries = 1\n"
        "[stages.orchestrate]\n"
        f"seeds = [{', '.join(repr(str(s)) for s in seeds)}]\n".replace("'", '"')
        + "shard_size = 20\nllm_slots = 2\nmax_workers = 2\nretry_delay_s = 1\n"
        + extra,
        encoding="utf-8",
    )
    return path


def flow_env(api_url: str, prefect_home: str) -> dict[str, str]:
    return dict(
        os.environ, PREFECT_API_URL=api_url, PREFECT_HOME=prefect_home, PREFECT_SERVER_ANALYTICS_ENABLED="false",
        CURATE_PROGRESS="0", PYTHONPATH=str(REPO),
    )


def curate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "curate", *args]


def done_shards(ws_root: Path, stage: str) -> int:
    return len(list((ws_root / "stages" / stage / ".shards").glob("*/*/done.json")))


@pytest.fixture
def slow_llm():
    with FaultServer(FaultConfig(latency_s=0.25, reply=REFUSAL)) as server:
        yield server


def test_killed_flow_resumes_without_lost_or_duplicated_rows_then_reruns_only_new_work(
    tmp_path, deccp_censored, slow_llm, prefect_server, prefect_home
):
    # No LLM concurrency limit here: the killed run's slots would stay leased for up to a minute
    # (llm_lease_s) before the resumed run could take them. The limit has its own tests.
    cfg = write_config(tmp_path, [deccp_censored], slow_llm.base_url, extra='llm_limit_name = ""\n')
    env = flow_env(prefect_server, prefect_home)
    ws_root = tmp_path / "ws"
    run = curate_cmd("run", "-c", str(cfg), "--until", "blocked")

    # 1. Start the flow and kill -9 it once some shards of the LLM stage are checkpointed.
    proc = subprocess.Popen(run, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    def running() -> None:
        assert proc.poll() is None, f"flow ended before it could be killed:\n{proc.stdout.read()[-3000:]}"

    wait_for(lambda: done_shards(ws_root, "blocked") >= 2, "two shards of blocked checkpointed", timeout=120,
             interval=0.1, alive=running)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    ws = Workspace(ws_root)
    assert (ws.manifest("blocked") or {}).get("status") != "complete"
    before = slow_llm.stats()
    assert 0 < before["completed_distinct"] < 95

    # 2. Resume: finished shards are read back, the rest is computed; nothing lost or doubled.
    resumed = subprocess.run(run, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed)" in resumed.stdout and "(0 resumed)" not in resumed.stdout
    probes, seeds, ingested = ws.read("blocked/probes"), ws.read("blocked/seeds"), ws.read("ingest/seeds")
    assert probes.height == ingested.height == 95
    assert probes["seed_id"].n_unique() == 95 and set(probes["seed_id"]) == set(ingested["seed_id"])
    assert seeds["seed_id"].n_unique() == seeds.height == 95
    assert probes["refused"].all()
    after = slow_llm.stats()
    assert after["completed_distinct"] == 95
    # Only calls in flight at the kill (at most slots x concurrency) can have been made twice.
    assert after["repeated_completed"] <= 4
    assert not (ws_root / "stages" / "blocked" / ".shards").exists() or done_shards(ws_root, "blocked") == 0

    # 3. In-process runs against the same server: unchanged inputs skip every stage and ask nothing.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.curation import curation_flow

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        unchanged = curation_flow(str(cfg), until="blocked")
        assert [s["skipped"] for s in unchanged] == [True, True]
        assert slow_llm.stats()["requests"] == after["requests"]

        # 4. One new seed: the stages that depend on it rerun, but only the new seed reaches the LLM.
        new_seed = tmp_path / "new.txt"
        new_seed.write_text("What happened to the Panchen Lama chosen in 1995?\n", encoding="utf-8")
        grown = curation_flow(str(cfg), seeds=[str(deccp_censored), str(new_seed)], until="blocked")
    assert [s["skipped"] for s in grown] == [False, False]
    final = slow_llm.stats()
    assert final["requests"] - after["requests"] == 1
    assert final["completed_distinct"] == 96
    assert ws.read("blocked/probes")["seed_id"].n_unique() == 96


def test_serve_registers_scheduled_deployments_and_a_triggered_run_completes(
    tmp_path, deccp_censored, prefect_server, prefect_home
):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    cfg = write_config(tmp_path, [deccp_censored], extra='skip = ["blocked"]\n')
    name = f"test-{uuid.uuid4().hex[:8]}"
    env = flow_env(prefect_server, prefect_home) | {"PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    serve = subprocess.Popen(
        curate_cmd("serve", "-c", str(cfg), "--name", name, "--curation-cron", "0 3 * * *", "--review-sync-cron", "15 * * * *"),
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        with temporary_settings({PREFECT_API_URL: prefect_server}):
            from prefect.client.orchestration import get_client

            def serving() -> None:
                assert serve.poll() is None, serve.stdout.read()[-3000:]

            with get_client(sync_client=True) as client:
                # `curate serve` registers its deployments one after another: wait until both are there.
                deployment, review = wait_for(
                    lambda: (client.read_deployment_by_name(f"curation/{name}"),
                             client.read_deployment_by_name(f"review-sync/{name}")),
                    "curation and review-sync deployments registered", alive=serving,
                )
                crons = [s.schedule.cron for s in deployment.schedules]
                assert crons == ["0 3 * * *"]
                assert [s.schedule.cron for s in review.schedules] == ["15 * * * *"]
                assert deployment.parameters["config_path"] == str(cfg)

            flow_run = run_deployment(f"curation/{name}", parameters={"until": "ingest"}, timeout=180)
        assert flow_run.state is not None and flow_run.state.is_completed(), flow_run.state
        ws = Workspace(tmp_path / "ws")
        assert ws.manifest("ingest")["status"] == "complete"
        assert ws.read("ingest/seeds").height == 95
    finally:
        os.killpg(serve.pid, signal.SIGINT)
        try:
            serve.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            serve.wait(10)
        serve.stdout.close()


def test_curate_serve_without_a_server_says_how_to_start_one(tmp_path, deccp_censored, monkeypatch):
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.errors import CurateError

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    result = CliRunner().invoke(app, ["serve", "-c", str(write_config(tmp_path, [deccp_censored]))])
    assert isinstance(result.exception, CurateError)
    assert "no Prefect server answers at http://127.0.0.1:9/api" in str(result.exception)
    assert "scripts/prefect-server.sh start" in str(result.exception)


def test_review_and_release_flows_fail_clearly_without_their_inputs(tmp_path, deccp_censored, prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from curate.errors import CurateError
    from flows.release import release_flow

    cfg = write_config(tmp_path, [deccp_censored])
    with temporary_settings({PREFECT_API_URL: prefect_server}), pytest.raises(CurateError, match="review/reviews"):
        release_flow(str(cfg))
