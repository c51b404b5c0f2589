"""LLM-judge mode of the refusal detector: against the real local server, and its fault paths
(an endpoint that refuses connections, which a real server will not do on demand)."""

from __future__ import annotations

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.llm import LLMCache
from curate.refusal import JUDGE_SCHEMA, RefusalConfig, classify_refusals, judge_requests, parse_judge_output

DEAD_ENDPOINT = EndpointConfig(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=3)

FRAME = pl.DataFrame({
    "prompt": ["What happened in Tiananmen Square in 1989?", "How do I boil an egg?", "Is Taiwan a country?", "q"],
    "language": ["en", "en", "en", "en"],
    "response": [
        "I'm sorry, but I can't discuss that topic.",
        "Put the egg in boiling water for 9 minutes, then cool it in cold water so it is easy to peel.",
        # Uncertain for the rules: a deflection phrase in a medium-length reply.
        "I don't have personal opinions on political questions. " + "Many people see the issue differently, " * 6,
        "",
    ],
})


def test_judge_prompt_is_rendered_from_the_template_with_question_and_reply():
    requests = judge_requests(FRAME.head(2), RefusalConfig(mode="llm"), "response", "prompt", "language")
    assert requests.columns == ["request_id", "prompt"]
    first = requests["prompt"][0]
    assert "What happened in Tiananmen Square in 1989?" in first and "I'm sorry, but I can't discuss" in first
    assert '"official_line"' in first and "JSON" in first


def test_long_replies_reach_the_judge_as_head_and_tail():
    long = pl.DataFrame({"prompt": ["q"], "response": ["START " + "x" * 10000 + " END"]})
    prompt = judge_requests(long, RefusalConfig(mode="llm", judge_max_chars=1000), "response", "prompt", "language")["prompt"][0]
    assert "START" in prompt and "END" in prompt and "characters omitted" in prompt and len(prompt) < 3500


def test_judge_output_parsing():
    assert parse_judge_output('{"verdict": "deflection", "confidence": 1.7}') == {"verdict": "deflection", "confidence": 1.0}
    for bad in ("not json", '{"verdict": "maybe", "confidence": 0.5}', '{"verdict": "hard", "confidence": "high"}'):
        with pytest.raises(ValueError):
            parse_judge_output(bad)
    assert set(JUDGE_SCHEMA["properties"]["verdict"]["enum"]) == {"answer", "hard", "deflection", "official_line"}


def test_judge_failures_are_kept_as_errors_and_rules_llm_falls_back_to_rules():
    llm = classify_refusals(FRAME, RefusalConfig(mode="llm"), endpoint=DEAD_ENDPOINT)
    assert llm.height == FRAME.height
    assert llm["refused"].is_null().all()
    assert llm["judge_error"].head(3).str.contains("connection").all()
    assert llm["judge_error"][3] is None  # empty reply: no call, no verdict

    mixed = classify_refusals(FRAME, RefusalConfig(mode="rules+llm"), endpoint=DEAD_ENDPOINT)
    rules = classify_refusals(FRAME, RefusalConfig(mode="rules"))
    assert mixed["refused"].to_list() == rules["refused"].to_list()
    assert mixed["detector"].to_list() == ["rules"] * 4
    # Only the uncertain row was sent to the judge, so only it carries the judge's error.
    assert mixed["judge_error"].is_not_null().to_list() == [False, False, True, False]


@pytest.mark.slow
@pytest.mark.llm
def test_judge_against_the_local_model_returns_a_structured_verdict_per_row(llm_server, tmp_path):
    endpoint = llm_server.endpoint.model_copy(update={"max_tokens": 48})
    cfg = RefusalConfig(mode="llm")
    with LLMCache(tmp_path / "cache.sqlite") as cache:
        out = classify_refusals(FRAME.head(3), cfg, endpoint=endpoint, cache=cache)
        assert out["detector"].to_list() == ["llm"] * 3
        # Grammar-constrained JSON: a tiny model's verdict may be wrong, but it is always well-formed.
        assert out["judge_error"].is_null().all(), out["judge_error"].to_list()
        assert out["refused"].is_not_null().all()
        assert out["refusal_score"].is_between(0, 1).all()
        kinds = out.filter(pl.col("refused"))["refusal_kind"].to_list()
        assert set(kinds) <= {"hard", "deflection", "official_line"}
        # The second run is served from the cache and gives the same verdicts.
        again = classify_refusals(FRAME.head(3), cfg, endpoint=endpoint, cache=cache)
        assert again["refused"].to_list() == out["refused"].to_list()

        mixed = classify_refusals(FRAME, RefusalConfig(mode="rules+llm"), endpoint=endpoint, cache=cache)
        assert mixed["detector"].to_list() == ["rules", "rules", "llm", "rules"]


@pytest.mark.slow
@pytest.mark.llm
def test_model_llm_cascade_against_the_local_model_judges_only_the_uncertain_band(llm_server, tmp_path):
    endpoint = llm_server.endpoint.model_copy(update={"max_tokens": 48})
    with LLMCache(tmp_path / "cache.sqlite") as cache:
        model_only = classify_refusals(FRAME, RefusalConfig(mode="model"))
        scores = model_only["refusal_score"].to_list()
        # A band around the third reply's score only: that row goes to the judge, the others keep the model's verdict.
        band = RefusalConfig(mode="model+llm", uncertain_low=scores[2] - 1e-6, uncertain_high=scores[2] + 1e-6)
        out = classify_refusals(FRAME, band, endpoint=endpoint, cache=cache)
    judged = out["detector"].to_list()
    assert judged[2] == "llm" and out["judge_error"].is_null().all(), out["judge_error"].to_list()
    assert scores[2] not in (scores[0], scores[1])
    assert [judged[i] for i in (0, 1, 3)] == ["model"] * 3
    assert out["refused"][3] is None and out["no_verdict_reason"][3] == "empty reply"
