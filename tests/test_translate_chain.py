"""The curation chain ingest -> keywords -> questions -> translate through the CLI (Workspace.run_stage), real local server."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.workspace import Workspace

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.mark.slow
@pytest.mark.llm
def test_chain_on_deccp_seeds_with_the_local_server(tmp_path, llm_endpoint, monkeypatch):
    seeds = tmp_path / "seeds.txt"
    lines = (DATA / "deccp" / "censored.txt").read_text(encoding="utf-8").splitlines()
    # The prompts about one topic, so its keyword clearly leads and meets min_count = 2.
    seeds.write_text("\n".join(line for line in lines if "Great Firewall" in line)[:2000] + "\n", encoding="utf-8")
    config = tmp_path / "curate.toml"
    config.write_text(
        f'''workspace = "{tmp_path / 'ws'}"
languages = ["en", "zh"]

[llm]
base_url = "{llm_endpoint.base_url}"
model = "{llm_endpoint.model}"
max_concurrency = 2
max_retries = 1
timeout_s = 180

[stages.keywords]
max_keywords = 1

[stages.questions]
per_keyword = 2
max_rounds = 1
# SmolLM2-135M rarely writes a well-formed question; relaxed so some reach translation.
require_question_mark = false
require_keyword = false

[stages.translate]
faithfulness_model = "none"
max_attempts = 1
''',
        encoding="utf-8",
    )
    # Token limits come from the environment: the config loader refuses any TOML key containing "token".
    monkeypatch.setenv("CURATE__LLM__MAX_TOKENS", "120")
    monkeypatch.setenv("CURATE__STAGES__QUESTIONS__OVERRIDES", "{ temperature = 0.7, max_tokens = 120 }")
    monkeypatch.setenv("CURATE__STAGES__TRANSLATE__OVERRIDES", "{ temperature = 0.2, max_tokens = 40 }")
    runner = CliRunner()
    for command in (["ingest", str(seeds)], ["keywords", "-q"], ["questions", "-q"], ["translate", "-q"]):
        result = runner.invoke(app, [*command, "-c", str(config)])
        assert result.exit_code == 0, (command, result.output, result.exception)

    ws = Workspace(tmp_path / "ws")
    keywords = ws.read("keywords/keywords")
    assert keywords.height == 1
    assert keywords["keyword"].to_list() == ["Great Firewall"]
    seed_ids = set(ws.read("ingest/seeds")["seed_id"])
    assert set(keywords["seed_ids"].explode()) <= seed_ids

    questions, rejects = ws.read("questions/questions"), ws.read("questions/rejects")
    for keyword_id in keywords["keyword_id"]:
        # Every keyword ends in questions or in rejects with a reason: nothing vanishes.
        assert questions.filter(pl.col("keyword_id") == keyword_id).height + rejects.filter(pl.col("keyword_id") == keyword_id).height >= 1
    assert set(questions["keyword_id"]) <= set(keywords["keyword_id"])
    assert (questions["status"] == "ok").all() and rejects["reject_reason"].is_not_null().all()

    translations = ws.read("translate/translations")
    assert translations.height == questions.height * 2
    pairs = translations.select("question_id", "language").unique()
    assert pairs.height == translations.height
    assert set(translations["question_id"]) == set(questions["question_id"])
    assert set(translations["status"]) <= {"ok", "flagged", "error"}
    own = translations.filter(pl.col("language") == pl.col("source_language"))
    assert own.height == questions.height and (own["attempts"] == 0).all()

    for stage in ("keywords", "questions", "translate"):
        manifest = ws.manifest(stage)
        assert manifest["status"] == "complete" and manifest["report"]
    assert "llm_usage" in ws.manifest("questions")["report"]
    again = runner.invoke(app, ["translate", "-q", "-c", str(config)])
    assert "skipped" in again.output
