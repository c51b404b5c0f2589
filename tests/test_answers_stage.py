"""The answers stage through Workspace.run_stage: candidates + rejects account for every request."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import EndpointConfig
from curate.ids import content_id
from curate.llm import LLMCache
from curate.records import Candidate, Translation, conform, polars_schema
from curate.stages.answers import REJECT_REASONS, AnswersConfig, answers_stage
from curate.workspace import StageOutput, Workspace

DEAD_ENDPOINT = EndpointConfig(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=3)


def translations_from(deccp_censored: Path) -> pl.DataFrame:
    """Two deccp seeds as English questions, one Chinese translation, and one flagged row that must be skipped."""
    en = [ln for ln in deccp_censored.read_text(encoding="utf-8").splitlines() if ln.strip()][:2]
    rows = [(en[0], "en", "ok"), (en[1], "en", "ok"), ("中国政府如何控制和审查国内媒体？", "zh", "ok"), ("(bad)", "fr", "flagged")]
    qid = content_id("q", en[0], "kw")
    return conform(pl.DataFrame({
        "translation_id": [content_id("tr", t, lang, qid) for t, lang, _ in rows],
        "question_id": [qid] * len(rows),
        "source_language": ["en"] * len(rows),
        "language": [lang for _, lang, _ in rows],
        "text": [t for t, _, _ in rows],
        "status": [s for _, _, s in rows],
    }), Translation)


def put_translations(ws: Workspace, df: pl.DataFrame) -> None:
    ws.run_stage("translate", lambda: StageOutput(tables={"translations": df}))


def test_llm_errors_go_to_rejects_with_status_error(tmp_path, deccp_censored):
    ws = Workspace(tmp_path / "ws")
    put_translations(ws, translations_from(deccp_censored))
    cfg = AnswersConfig(generator=DEAD_ENDPOINT, candidates_per_prompt=2)
    result = ws.run_stage("answers", answers_stage, inputs={"translations": "translate/translations"}, config=cfg)
    assert ws.read("answers/candidates").height == 0
    rejects = ws.read("answers/rejects")
    assert rejects.height == 6  # 3 usable translations x 2; the flagged one is not sent
    assert rejects["status"].unique().to_list() == ["error"]
    assert rejects["reject_reason"].unique().to_list() == ["llm_error"]
    assert rejects["error"].str.contains("connection").all()
    assert rejects["candidate_id"].n_unique() == 6
    report = result.manifest["report"]
    assert report["translations_skipped"] == 1 and report["errors"] == 6
    assert report["rejects"]["by_reject_reason"] == {"llm_error": 6}


@pytest.mark.slow
@pytest.mark.llm
def test_answers_stage_end_to_end_with_the_local_model(tmp_path, deccp_censored, llm_server):
    ws = Workspace(tmp_path / "ws")
    put_translations(ws, translations_from(deccp_censored))
    cfg = AnswersConfig(
        generator=llm_server.endpoint, candidates_per_prompt=2, require_reasoning=False,
        overrides={"temperature": 0.8, "max_tokens": 64},
    )
    with LLMCache.for_workspace(ws.root) as cache:
        result = ws.run_stage("answers", answers_stage, inputs={"translations": "translate/translations"},
                              config=cfg, cache=cache)
    kept, rejects = ws.read("answers/candidates"), ws.read("answers/rejects")
    assert kept.height + rejects.height == 6
    assert dict(kept.schema) == dict(polars_schema(Candidate))
    assert (kept["status"] == "ok").all() and kept["reject_reason"].is_null().all()
    assert set(rejects["reject_reason"].to_list()) <= set(REJECT_REASONS)
    assert rejects.filter(pl.col("reject_reason") != "llm_error")["status"].eq("rejected").all()
    both = pl.concat([kept, rejects.select(kept.columns)])
    assert both["candidate_id"].n_unique() == 6
    assert sorted(both["candidate_index"].to_list()) == [0, 0, 0, 1, 1, 1]
    # Real generations: text came back for every successful call, with its finish reason.
    ok_calls = both.filter(pl.col("status") != "error")
    assert ok_calls["finish_reason"].is_not_null().all()
    report = result.manifest["report"]
    assert report["candidates_requested"] == 6 and report["llm"]
    assert "by_language" in report["rejects"] or rejects.height == 0


@pytest.mark.slow
@pytest.mark.llm
def test_answers_cli_reads_translations_and_skips_when_unchanged(tmp_path, deccp_censored, llm_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "curate.toml").write_text(
        f'workspace = "ws"\n[llm]\nbase_url = "{llm_server.base_url}"\nmax_concurrency = 2\n'
        '[stages.answers]\ncandidates_per_prompt = 1\nrequire_reasoning = false\n'
        'overrides = { temperature = 0.0, max_tokens = 32 }\n', encoding="utf-8")
    put_translations(Workspace(tmp_path / "ws"), translations_from(deccp_censored).head(1))
    runner = CliRunner()
    result = runner.invoke(app, ["answers", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "answers: done" in result.output
    assert "skipped" in runner.invoke(app, ["answers", "--quiet"]).output
