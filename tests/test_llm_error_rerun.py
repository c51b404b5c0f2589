"""Failed LLM calls leave the stage incomplete and visible, and a plain rerun retries exactly them.

The failures come from tests/fault_server.py (a FAULT INJECTOR that answers HTTP 500 to one
prompt); the rerun goes to the same stand-in with its faults switched off. The stage against the
real llama.cpp server is covered in tests/test_answers_stage.py.
"""

from __future__ import annotations

import json

import polars as pl
from typer.testing import CliRunner

from curate.cli import app
from curate.config import EndpointConfig
from curate.ids import content_id
from curate.llm import LLMCache
from curate.records import Translation, conform
from curate.stages.answers import AnswersConfig, answers_stage
from curate.workspace import StageOutput, Workspace
from tests.fault_server import FaultConfig, FaultServer

PROMPTS = ["Why do people protest in Hong Kong?", "What happened to the FAILING question?", "Who is Liu Xiaobo?"]
REPLY = "reasoning:The user asks a factual question, so I recall the history.|Here is what is known about it."


def translations() -> pl.DataFrame:
    qid = content_id("q", PROMPTS[0], "kw")
    return conform(pl.DataFrame({
        "translation_id": [content_id("tr", t, "en", qid) for t in PROMPTS],
        "question_id": [qid] * 3, "source_language": ["en"] * 3, "language": ["en"] * 3,
        "text": PROMPTS, "status": ["ok"] * 3,
    }), Translation)


def run(ws: Workspace, server: FaultServer, cache: LLMCache):
    endpoint = EndpointConfig(base_url=server.base_url, model="m", max_retries=1, timeout_s=5)
    cfg = AnswersConfig(generator=endpoint, candidates_per_prompt=2, require_reasoning=False)
    return ws.run_stage("answers", answers_stage, inputs={"translations": "translate/translations"}, config=cfg,
                        cache=cache)


def test_failed_calls_are_not_complete_shown_in_status_and_retried_alone(tmp_path, monkeypatch) -> None:
    ws = Workspace(tmp_path / "ws")
    ws.run_stage("translate", lambda: StageOutput(tables={"translations": translations()}))
    cache = LLMCache(tmp_path / "cache.sqlite")
    faulty = FaultConfig(plans={"": [REPLY], "FAILING": ["500"] * 10}, reply=REPLY.split("|")[1])
    with FaultServer(faulty) as server:
        first = run(ws, server, cache)
        assert server.stats()["faults"] == {"500": 4}  # 2 candidates x (1 try + 1 retry)
        manifest = first.manifest
        assert manifest["status"] == "incomplete"
        assert manifest["llm_errors"]["count"] == 2 and list(manifest["llm_errors"]["kinds"]) == ["http_500"]
        examples = manifest["report"]["rejects"]["reject_examples"]["llm_error"]
        assert len(examples) == 2 and all("500" in e for e in examples)

        monkeypatch.setenv("CURATE__WORKSPACE", str(tmp_path / "ws"))
        monkeypatch.chdir(tmp_path)
        status = json.loads(CliRunner().invoke(app, ["status", "--json"]).stdout)["answers"]
        assert status["status"] == "incomplete" and status["llm_errors"]["count"] == 2
        from curate.cli.options import console

        monkeypatch.setattr(console, "width", 250)  # one line per stage, so the text can be matched
        table = CliRunner().invoke(app, ["status"]).output
        assert "incomplete" in table and "2 LLM errors" in table and "http_500" in table

        # The endpoint recovers. A plain rerun (same config, no --force) is not skipped and makes
        # only the two failed calls; the completed ones come from the cache.
        server.config.plans = {"": [REPLY]}
        server.reset()
        second = run(ws, server, cache)
        assert server.stats()["requests"] == 2
        assert all(b"FAILING" in body for body in server.bodies)
        assert not second.skipped and second.manifest["status"] == "complete"
        assert second.manifest["llm_errors"]["count"] == 0
        assert ws.read("answers/candidates").height == 6
        # Now that it is complete, a rerun is skipped.
        assert run(ws, server, cache).skipped and server.stats()["requests"] == 2
