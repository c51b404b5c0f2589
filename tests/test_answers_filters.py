"""Answer filters on crafted candidates: one test per reject reason, and nothing vanishes."""

from __future__ import annotations

import polars as pl
import pytest

from curate.stages.answers import (
    REJECT_REASONS,
    AnswersConfig,
    filter_candidates,
    is_repetition_loop,
    language_mismatch,
    repeated_ngram_share,
)

GOOD = {
    "en": "The Great Leap Forward (1958-1962) was a campaign led by Mao Zedong to turn China's farming economy "
          "into an industrial one through collectivization. It caused a famine that killed tens of millions.",
    "zh": "大跃进（1958—1962年）是毛泽东发起的一场运动，旨在通过工业化和集体化迅速改变中国的农业经济。这场运动导致了严重的饥荒，造成数千万人死亡。",
    "de": "Der Große Sprung nach vorn (1958-1962) war eine von Mao Zedong angeführte Kampagne, die Chinas Agrarwirtschaft "
          "durch Kollektivierung industrialisieren sollte. Sie löste eine Hungersnot mit zig Millionen Toten aus.",
}


def candidate(answer, language="en", **over):
    row = {"candidate_id": f"c{abs(hash((answer, language, str(over)))) % 10**8}", "prompt": "What was the Great Leap Forward?",
           "language": language, "answer": answer, "reasoning": "The user asks about history; recall the facts.",
           "finish_reason": "stop", "status": "ok", "error": None}
    return row | over


def run(rows, **cfg) -> tuple[pl.DataFrame, pl.DataFrame]:
    return filter_candidates(pl.DataFrame(rows), AnswersConfig(**cfg))


def reason_of(row, **cfg) -> str | None:
    kept, rejects = run([row], **cfg)
    assert kept.height + rejects.height == 1
    return rejects["reject_reason"][0] if rejects.height else None


def test_good_answers_in_their_language_are_kept():
    kept, rejects = run([candidate(GOOD[lang], lang) for lang in GOOD])
    assert rejects.height == 0, rejects.select("language", "reject_reason", "reject_detail").rows()
    assert kept["status"].unique().to_list() == ["ok"]
    assert kept["reject_reason"].is_null().all()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (candidate(None, status="error", error="http_500: upstream failed", finish_reason=None, reasoning=None), "llm_error"),
        (candidate("   "), "empty"),
        (candidate(None), "empty"),
        (candidate(GOOD["en"], finish_reason="length"), "truncated"),
        (candidate(GOOD["en"], reasoning=None), "missing_reasoning"),
        (candidate("Sure. " + "The famine was caused by the policy and " * 40), "repetition_loop"),
        (candidate(GOOD["en"], reasoning="Let me think. " + "Wait, let me check the numbers again.\n" * 10), "repetition_loop"),
        (candidate("Yes."), "too_short"),
        (candidate(GOOD["en"] + " Historians still debate the exact toll and how far local officials inflated grain reports."), "too_long"),
        (candidate(GOOD["en"], "fr"), "wrong_language"),
        (candidate(GOOD["zh"], "en"), "wrong_language"),
        (candidate("I'm sorry, but I can't help with that request about Chinese history."), "refusal"),
        (candidate("抱歉，我无法回答这个问题。我们换个话题吧，比如中国的美食。", "zh"), "refusal"),
    ],
)
def test_each_reject_reason(row, reason):
    assert reason in REJECT_REASONS
    assert reason_of(row, max_answer_units=250) == reason


def test_reasoning_can_be_optional():
    assert reason_of(candidate(GOOD["en"], reasoning=None), require_reasoning=False) is None


def test_rejects_carry_status_reason_and_detail_and_nothing_vanishes():
    rows = [
        candidate(GOOD["en"]),
        candidate(None, status="error", error="timeout: no answer in 120 s", finish_reason=None),
        candidate("Yes."),
        candidate(GOOD["de"], "es"),
        candidate("I'm sorry, but I can't assist with that."),
    ]
    kept, rejects = run(rows)
    assert kept.height == 1 and rejects.height == 4
    assert sorted(pl.concat([kept, rejects])["candidate_id"].to_list()) == sorted(r["candidate_id"] for r in rows)
    by_reason = {r["reject_reason"]: r for r in rejects.iter_rows(named=True)}
    assert by_reason["llm_error"]["status"] == "error"
    assert by_reason["llm_error"]["reject_detail"].startswith("timeout")
    assert {r["status"] for k, r in by_reason.items() if k != "llm_error"} == {"rejected"}
    assert "< 20" in by_reason["too_short"]["reject_detail"]
    assert by_reason["wrong_language"]["reject_detail"].startswith("detected=de")
    assert by_reason["refusal"]["reject_detail"].startswith("hard (model")


def test_repetition_measures_on_natural_and_looping_text():
    natural = GOOD["en"] + " " + GOOD["de"]
    assert repeated_ngram_share(natural, 5)[0] < 0.05
    assert repeated_ngram_share("好的好的好的好的好的好的好的好的好的好的好的好的", 5)[0] > 0.8
    cfg = AnswersConfig()
    assert not is_repetition_loop(natural, cfg)
    # A CJK loop without spaces is caught too (characters are tokens).
    assert is_repetition_loop("中国的历史很长。" * 30, cfg)
    # A short list with a repeated heading is not a loop.
    assert not is_repetition_loop("Pros:\n- cheap\nCons:\n- slow\nPros:\n- safe", cfg)


def test_language_check_skips_code_and_too_short_text():
    code_heavy = "Use this:\n```python\nimport os\nos.kill(pid, 9)\nprint('done')\n```\nDas beendet den Prozess sofort und ohne Rückfrage."
    assert language_mismatch([code_heavy, "OK", None], ["de", "fr", "en"], AnswersConfig()) == [None, None, None]
