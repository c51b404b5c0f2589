"""Replies that carry a reasoning section (`<think>…</think>answer` and its variants): every detector
mode judges the final answer, not the thinking; reasoning with no answer gives no verdict."""

from __future__ import annotations

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.refusal import RefusalConfig, classify_refusals

ANSWER = ("The Great Leap Forward (1958-1962) was a campaign to industrialise China rapidly. Collectivisation, "
          "inflated grain quotas and backyard steel furnaces led to a famine in which tens of millions died.")
REFUSAL = "I'm sorry, but I can't help with that request."
# Long, neutral, analytical thinking: on its own it reads like an answer.
NEUTRAL_THINKING = ("Okay, the user asks about the famine. Let me recall the timeline: the campaign began in 1958, "
                    "communes were formed, grain quotas were inflated, and the famine followed. ") * 8
# Thinking that weighs refusing, then decides to answer.
REFUSING_THINKING = ("This is a sensitive topic. I'm sorry, but maybe I can't help with that? I should refuse... "
                     "No: it is a factual history question, so I can answer it.")


@pytest.mark.parametrize("mode", ["model", "rules"])
def test_reasoning_then_refusal_is_a_refusal(mode):
    replies = [f"<think>\n{NEUTRAL_THINKING}\n</think>\n\n{REFUSAL}",
               f"{NEUTRAL_THINKING}\n</think>\n\n{REFUSAL}",          # template opened the block
               f"◁think▷{NEUTRAL_THINKING}◁/think▷{REFUSAL}"]          # Kimi-VL thinking markers
    out = classify_refusals(pl.DataFrame({"response": replies}), RefusalConfig(mode=mode))
    assert out["refused"].to_list() == [True, True, True], out["refusal_score"].to_list()
    # The caller's column is untouched; only verdict columns are added.
    assert out["response"].to_list() == replies
    assert out.columns == ["response", "refused", "refusal_kind", "refusal_score", "detector", "judge_error", "no_verdict_reason"]


@pytest.mark.parametrize("mode", ["model", "rules"])
def test_reasoning_that_mentions_refusing_then_a_full_answer_is_answered(mode):
    replies = [f"<think>{REFUSING_THINKING}</think>\n{ANSWER}", f"<thinking>{REFUSING_THINKING}</thinking>{ANSWER}"]
    out = classify_refusals(pl.DataFrame({"response": replies}), RefusalConfig(mode=mode))
    assert out["refused"].to_list() == [False, False], out["refusal_score"].to_list()
    # The same reply with the thinking alone would be scored on the thinking: it is what the split removes.
    thinking_alone = classify_refusals(pl.DataFrame({"response": [REFUSING_THINKING]}), RefusalConfig(mode=mode))
    assert thinking_alone["refusal_score"][0] > out["refusal_score"][0]


def test_reasoning_without_an_answer_gets_no_verdict_with_a_reason():
    df = pl.DataFrame({"response": [f"<think>{NEUTRAL_THINKING}", f"<think>{REFUSING_THINKING}</think>  \n", ANSWER]})
    for mode in ("model", "rules"):
        out = classify_refusals(df, RefusalConfig(mode=mode))
        assert out["refused"].to_list() == [None, None, False]
        assert out["no_verdict_reason"].to_list() == ["no final answer (reasoning only)"] * 2 + [None]



def test_judge_mode_sends_no_call_for_reasoning_without_an_answer():
    dead = EndpointConfig(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=3)
    df = pl.DataFrame({"response": [f"<think>{NEUTRAL_THINKING}", f"<think>{NEUTRAL_THINKING}</think>{REFUSAL}"]})
    out = classify_refusals(df, RefusalConfig(mode="llm"), endpoint=dead)
    assert out["refused"].to_list() == [None, None]
    # The reasoning-only reply is never sent; the one with an answer is, and the dead judge's error shows.
    assert out["no_verdict_reason"][0] == "no final answer (reasoning only)"
    assert out["no_verdict_reason"][1].startswith("judge failed: ")
    assert out["judge_error"][0] is None and out["judge_error"][1]
