"""Reasoning capture and structured-output parsing: pure functions, no server."""

from __future__ import annotations

import pytest

from curate.llm import split_reasoning
from curate.llm.structured import InvalidOutput, extract_json, parse_structured


def test_inline_think_block_is_split_from_answer():
    out = split_reasoning("<think>\nThe user asks about X.\n</think>\n\nX is a city.", None, "stop")
    assert out.answer == "X is a city."
    assert out.reasoning == "The user asks about X."
    assert not out.truncated


def test_closing_tag_only_when_template_opened_the_block():
    out = split_reasoning("First I recall facts.</think>The answer is 4.", None, "stop")
    assert (out.answer, out.reasoning) == ("The answer is 4.", "First I recall facts.")


def test_separate_reasoning_field_is_kept():
    out = split_reasoning("Paris.", "Capital of France...", "stop")
    assert (out.answer, out.reasoning, out.truncated) == ("Paris.", "Capital of France...", False)


def test_unclosed_block_cut_by_max_tokens_is_truncated_with_no_answer():
    out = split_reasoning("<think>Let me think step by step about", None, "length")
    assert out.answer is None
    assert out.reasoning == "Let me think step by step about"
    assert out.truncated


def test_reasoning_field_without_content_on_length_is_truncated():
    out = split_reasoning(None, "still thinking", "length")
    assert (out.answer, out.truncated) == (None, True)


def test_answer_cut_after_reasoning_keeps_the_partial_answer():
    out = split_reasoning("<think>ok</think>The answer is a long", None, "length")
    assert out.answer == "The answer is a long" and not out.truncated


def test_plain_answer_without_reasoning():
    out = split_reasoning("  Just an answer. ", None, "stop")
    assert (out.answer, out.reasoning, out.truncated) == ("Just an answer.", None, False)


@pytest.mark.parametrize(
    "text",
    ['{"a": 1}', 'Sure! ```json\n{"a": 1}\n``` hope it helps', 'The result is {"a": 1} as asked.'],
)
def test_json_is_found_in_prose_and_fences(text):
    assert extract_json(text) == {"a": 1}


def test_schema_mismatch_names_the_field():
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    with pytest.raises(InvalidOutput, match="score"):
        parse_structured('{"score": "high"}', schema, None)
    assert parse_structured('{"score": 3}', schema, None) == '{"score": 3}'


def test_validator_rejection_and_truncated_answer_are_invalid():
    def must_be_short(text: str) -> str:
        if len(text) > 5:
            raise ValueError("too long")
        return text

    with pytest.raises(InvalidOutput, match="too long"):
        parse_structured("far too long", None, must_be_short)
    with pytest.raises(InvalidOutput, match="no answer"):
        parse_structured(None, None, must_be_short)
    assert parse_structured("ok", None, must_be_short) == "ok"


def test_usage_summary_prices_tokens_and_tolerates_partial_frames():
    import polars as pl

    from curate.llm import usage_summary

    df = pl.DataFrame({"model": ["a", "a", "b"], "status": ["ok", "error", "ok"], "error": [None, "http_500: x", None],
                       "cached": [False, False, True], "prompt_tokens": [1_000_000, 10, 500_000],
                       "completion_tokens": [1_000_000, 0, 500_000]})
    prices = {"a": {"usd_per_1m_prompt_tokens": 1.0, "usd_per_1m_completion_tokens": 2.0},
              "b": {"usd_per_1m_prompt_tokens": 4.0, "usd_per_1m_completion_tokens": 4.0}}
    s = usage_summary(df, "answers", prices)
    assert (s["requests"], s["ok"], s["errors"], s["error_kinds"]) == (3, 2, 1, {"http_500": 1})
    assert (s["calls_made"], s["cached"], s["prompt_tokens"], s["cached_prompt_tokens"]) == (2, 1, 1_000_010, 500_000)
    assert s["cost_usd"] == pytest.approx(3.00001) and s["cost_usd_if_uncached"] == pytest.approx(7.00001)
    assert usage_summary(df, "answers", {})["cost_usd"] is None  # unpriced models: no made-up zero
    bare = usage_summary(pl.DataFrame({"request_id": ["x"], "prompt_tokens": [5]}), "s")
    assert bare["requests"] == 1 and bare["prompt_tokens"] == 5
