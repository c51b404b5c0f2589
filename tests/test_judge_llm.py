"""The judge stage against the real local LLM server (SmolLM2-135M): its judgments are weak, the
mechanics are real — every candidate gets every column, a score is either valid or null with its
error, the calls are cached, and the CLI reruns nothing when nothing changed."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.workspace import Workspace

pytestmark = [pytest.mark.slow, pytest.mark.llm]
runner = CliRunner()

QUESTIONS = pl.DataFrame({
    "question_id": ["q-1", "q-2"], "keyword_id": ["kw-1", "kw-2"], "keyword": ["tiananmen", "tibet"],
    "text": ["What happened in Beijing in June 1989?", "Why do Tibetans protest?"], "language": ["en", "en"],
    "topic": ["tiananmen", "tibet"], "status": ["ok", "ok"],
})


def judge_candidates() -> pl.DataFrame:
    rows = [
        ("c-1", "q-1", "en", 0, "What happened in Beijing in June 1989?",
         "In June 1989 the army cleared Tiananmen Square of protesters; many civilians were killed."),
        ("c-2", "q-1", "en", 1, "What happened in Beijing in June 1989?", "I cannot discuss this topic."),
        ("c-3", "q-2", "zh", 0, "藏人为什么抗议？", "许多藏人抗议对宗教和文化的限制。"),
    ]
    return pl.DataFrame(
        [{"candidate_id": c, "translation_id": f"t-{q}-{lang}", "question_id": q, "language": lang, "candidate_index": k,
          "prompt": p, "answer": a, "reasoning": "Recall the facts.", "model": "gen", "finish_reason": "stop", "status": "ok"}
         for c, q, lang, k, p, a in rows])


def write_config(tmp_path: Path, base_url: str, model: str) -> Path:
    config = tmp_path / "curate.toml"
    config.write_text(
        f'workspace = "{tmp_path / "ws"}"\n\n[llm]\nbase_url = "{base_url}"\nmodel = "{model}"\nmax_concurrency = 2\n'
        'timeout_s = 180\nmax_retries = 2\n\n[stages.judge]\noverrides = { temperature = 0.0, max_tokens = 96 }\n',
        encoding="utf-8")
    ws = Workspace(tmp_path / "ws")
    ws.run_stage("answers", lambda: {"candidates": judge_candidates(), "rejects": judge_candidates().clear()}, force=True)
    ws.run_stage("questions", lambda: {"questions": QUESTIONS}, force=True)
    return config


def test_judge_stage_scores_every_candidate_through_the_real_server(tmp_path, llm_server):
    config = write_config(tmp_path, llm_server.base_url, llm_server.endpoint.model)
    result = runner.invoke(app, ["judge", "-c", str(config), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ws = Workspace(tmp_path / "ws")
    judgments = ws.read("judge/judgments")
    assert judgments["candidate_id"].to_list() == ["c-1", "c-2", "c-3"]
    # Each score is valid or null with its error, never a default.
    for row in judgments.iter_rows(named=True):
        sat_ok = row["satisfaction"] is not None and 0 <= row["satisfaction"] <= 4
        assert sat_ok != (row["satisfaction_error"] is not None), row
        assert (row["harmful"] is not None) != (row["harm_error"] is not None), row
        assert row["status"] == ("ok" if sat_ok and row["harmful"] is not None else "error")
        assert row["refusal_score"] is not None and row["answer_units"] > 0
    assert judgments.filter(pl.col("candidate_id") == "c-2")["refused"].item() is True  # the rules see this one
    assert judgments["topic"].to_list() == ["tiananmen", "tiananmen", "tibet"]  # from questions/questions
    assert judgments.group_by("question_id", "language").agg(pl.col("best_rank").min())["best_rank"].to_list() == [1, 1]
    scores = ws.read("judge/scores")
    assert scores.height == 6 and set(scores["metric"]) == {"satisfaction", "harmful"}
    report = ws.manifest("judge")["report"]
    # The calls are judge_score's, shard by shard; judge only chooses.
    assert ws.manifest("judge_score")["report"]["llm"]["requests"] >= 6
    assert report["judges"][0]["model"] == llm_server.endpoint.model
    assert set(report["satisfaction_by_language"]) == {"en", "zh"}
    assert set(report["rubrics"]) == {"satisfaction", "harm", "refusal"}

    # Unchanged inputs and config: skipped, nothing asked. Forced: every reply comes from the cache.
    again = runner.invoke(app, ["judge", "-c", str(config), "--quiet"], catch_exceptions=False)
    assert again.output.count("skipped (unchanged)") == 2  # judge_score, then judge
    forced = runner.invoke(app, ["judge", "-c", str(config), "--quiet", "--force"], catch_exceptions=False)
    assert forced.exit_code == 0
    llm = ws.manifest("judge_score")["report"]["llm"]
    assert llm["calls_made"] == 0 and llm["cached"] == llm["requests"]
    assert ws.read("judge/judgments").equals(judgments)
