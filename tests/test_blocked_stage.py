"""The blocked stage through Workspace.run_stage: real local model end to end, and LLM errors kept."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import EndpointConfig
from curate.llm import LLMCache
from curate.records import BlockedProbe, Seed, polars_schema
from curate.stages.blocked import BlockedConfig, blocked_stage, mark_blocked
from curate.stages.ingest import IngestStageConfig, ingest_stage
from curate.workspace import Workspace

DEAD_ENDPOINT = EndpointConfig(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=3)


def seeds_file(tmp_path: Path, deccp_censored: Path, n: int = 3) -> Path:
    lines = [ln for ln in deccp_censored.read_text(encoding="utf-8").splitlines() if ln.strip()][:n]
    path = tmp_path / "seeds.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ingest(ws: Workspace, path: Path) -> None:
    ws.run_stage("ingest", ingest_stage, inputs={"sources": [path]},
                 config=IngestStageConfig.model_validate({"ingest": {"default_language": "en"}}))


def test_mark_blocked_uses_the_refusal_rate_and_leaves_unjudged_seeds_undetermined():
    seeds = pl.DataFrame({"seed_id": ["a", "b", "c"]})
    probes = pl.DataFrame({"seed_id": ["a", "a", "b", "b", "c"], "refused": [True, False, False, False, None]})
    marked = mark_blocked(seeds, probes, 0.5)
    assert marked.sort("seed_id")["blocked"].to_list() == [True, False, None]


def test_llm_errors_become_error_probes_and_no_seed_is_called_blocked(tmp_path, deccp_censored):
    ws = Workspace(tmp_path / "ws")
    ingest(ws, seeds_file(tmp_path, deccp_censored))
    result = ws.run_stage("blocked", blocked_stage, inputs={"seeds": "ingest/seeds"}, config=BlockedConfig(target=DEAD_ENDPOINT))
    probes = ws.read("blocked/probes")
    assert probes.height == 3
    assert probes["status"].unique().to_list() == ["error"]
    assert probes["error"].str.contains("connection").all()
    assert probes["refused"].is_null().all()
    assert ws.read("blocked/seeds").height == 0
    assert result.manifest["report"]["probe_errors"] == 3 and result.manifest["report"]["undetermined"] == 3


@pytest.mark.slow
@pytest.mark.llm
def test_blocked_stage_end_to_end_on_deccp_seeds_with_the_local_model(tmp_path, deccp_censored, llm_server):
    ws = Workspace(tmp_path / "ws")
    ingest(ws, seeds_file(tmp_path, deccp_censored))
    config = BlockedConfig(target=llm_server.endpoint, keep="all", overrides={"temperature": 0.0, "max_tokens": 48})
    with LLMCache.for_workspace(ws.root) as cache:
        result = ws.run_stage("blocked", blocked_stage, inputs={"seeds": "ingest/seeds"}, config=config, cache=cache)
        assert not result.skipped and result.manifest["status"] == "complete"
        probes = ws.read("blocked/probes")
        seeds = ws.read("blocked/seeds")
        assert probes.height == 3 and seeds.height == 3
        assert dict(probes.select(list(BlockedProbe.model_fields)).schema) == dict(polars_schema(BlockedProbe))
        assert dict(seeds.schema) == dict(polars_schema(Seed))
        assert (probes["status"] == "ok").all(), probes["error"].to_list()
        assert probes["response"].str.len_chars().min() > 0
        assert probes["refused"].is_not_null().all() and (probes["detector"] == "model").all()
        # blocked on each seed agrees with its probe's verdict.
        joined = seeds.join(probes, on="seed_id")
        assert (joined["blocked"] == joined["refused"]).all()
        again = ws.run_stage("blocked", blocked_stage, inputs={"seeds": "ingest/seeds"}, config=config, cache=cache)
        assert again.skipped
        assert result.manifest["report"]["detector"]["model"].startswith("refusal-detector@")


@pytest.mark.slow
@pytest.mark.llm
def test_blocked_cli_uses_llm_settings_and_stage_section(tmp_path, deccp_censored, llm_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "curate.toml").write_text(
        f'workspace = "ws"\n[llm]\nbase_url = "{llm_server.base_url}"\nmax_concurrency = 2\n'
        '[ingest]\ndefault_language = "en"\n'
        '[stages.blocked]\nkeep = "all"\noverrides = { temperature = 0.0, max_tokens = 48 }\n', encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(seeds_file(tmp_path, deccp_censored, 2))]).exit_code == 0
    result = runner.invoke(app, ["blocked", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "blocked: done probes=2, seeds=2" in result.output
    assert "skipped" in runner.invoke(app, ["blocked", "--quiet"]).output
