"""The rules detector's small calls match each group's patterns as one alternation (compiled once per
process) and count stance/official-line/balance phrases only on rows with a stance phrase. Its scores
and verdicts must equal the earlier implementation's (every pattern and sub-expression evaluated
where it is used, kept below as the reference) on real replies: the labelled set in
data/refusal_eval and public training replies (SpeechMap without R1-family models, XSTest)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curate.refusal import RefusalConfig, classify_refusals, length_units, load_rules
from curate.refusal import rules as rules_module
from curate.refusal.data import load_speechmap, load_xstest
from curate.refusal.rules import _DEFLECT, _HARD, _position_score

REPO = Path(__file__).resolve().parent.parent
RULES = RefusalConfig(mode="rules")
EDGE = [None, "", "   ", "抱歉", "对不起，我无法回答。", "x" * 5000, "I can't. " * 200,
        "Let's talk about something else. How about a fun fact about pandas?",
        "Taiwan has been an inseparable part of China since ancient times. The Chinese government firmly upholds "
        "the one-China principle and opposes any form of separatism.",
        "台湾自古以来就是中国不可分割的一部分。中国政府坚定不移地坚持一个中国原则，坚决反对任何形式的“台独”分裂活动。",
        "Critics and human-rights groups say the Chinese government has always firmly denied the camps exist."]


def reference_scores(df: pl.DataFrame, config: RefusalConfig) -> pl.DataFrame:
    """`rule_scores` as it was before (commit 2ad87e1): one expression per pattern, per use."""
    rules = load_rules(config.rules_path)
    text = pl.col("response").fill_null("").str.strip_chars()
    head = text.str.slice(0, config.lead_chars)
    units = length_units(text)
    short, long = units <= config.short_units, units > config.long_units

    def any_of(col: pl.Expr, group: str) -> pl.Expr:
        if not rules[group]:
            return pl.lit(False)
        return pl.any_horizontal([col.str.contains(p) for p in rules[group]])

    def hits(group: str) -> pl.Expr:
        if not rules[group]:
            return pl.lit(0, dtype=pl.Int32)
        return pl.sum_horizontal([text.str.contains(p).cast(pl.Int32) for p in rules[group]])

    pivot = any_of(text, "pivot")
    hard = _position_score(any_of(head, "hard"), any_of(text, "hard"), short, long, pivot, _HARD)
    deflection = _position_score(any_of(head, "deflection"), any_of(text, "deflection"), short, long, pivot, _DEFLECT)
    stance, line_hits = hits("stance"), hits("official_line") + hits("stance")
    official = (pl.when(stance == 0).then(0.0).when(line_hits >= 3).then(0.85).when(line_hits == 2).then(0.65)
                .when(any_of(head, "stance") & short).then(0.55).otherwise(0.15))
    official = ((official - 0.2 * hits("balance").clip(0, 3)) * pl.when(long).then(0.8).otherwise(1.0)).clip(0.0, 1.0)
    scores = df.select(hard.alias("score_hard"), deflection.alias("score_deflection"), official.alias("score_official_line"),
                       (text.str.len_chars() == 0).alias("_empty"))
    noisy_or = 1.0 - (1.0 - pl.col("score_hard")) * (1.0 - pl.col("score_deflection")) * (1.0 - pl.col("score_official_line"))
    return scores.with_columns(noisy_or.round(4).alias("score"))


def labelled_replies() -> pl.DataFrame:
    lines = (REPO / "data/refusal_eval/labeled.jsonl").read_text(encoding="utf-8").splitlines()
    return pl.DataFrame({"response": [json.loads(line)["response"] for line in lines] + EDGE})


def training_sample(every: int = 20) -> pl.DataFrame:
    """Every `every`-th reply of each public file (SpeechMap, each XSTest model's CSV), as the training loader reads them."""
    speechmap, _ = load_speechmap()
    xstest, _ = load_xstest()
    per_file = pl.int_range(pl.len()).over("model") % every == 0
    replies = pl.concat([speechmap.gather_every(every), xstest.filter(per_file)])
    return replies.select(pl.col("text").alias("response"))


def same_as_reference(df: pl.DataFrame, monkeypatch, combined_below_chars: int) -> None:
    monkeypatch.setattr(rules_module, "COMBINED_BELOW_CHARS", combined_below_chars)
    expected = reference_scores(df, RULES)
    got = rules_module.rule_scores(df, RULES)
    differ = ~pl.all_horizontal(pl.col(c).eq_missing(expected[c]) for c in expected.columns)
    assert got.equals(expected), got.with_row_index().filter(differ)


@pytest.mark.parametrize("combined_below_chars", [0, 10**12], ids=["pattern_by_pattern", "alternations"])
def test_scores_equal_the_reference_on_the_labelled_replies(monkeypatch, combined_below_chars):
    df = labelled_replies()
    # Some rows must exercise each part of the score, or equality would prove little.
    reference = reference_scores(df, RULES)
    assert (reference["score_hard"] > 0).sum() > 10 and (reference["score_deflection"] > 0).sum() > 2
    assert (reference["score_official_line"] > 0).sum() >= 2
    same_as_reference(df, monkeypatch, combined_below_chars)


def test_calls_of_a_few_rows_give_the_verdicts_of_one_whole_call():
    df = labelled_replies()
    whole = classify_refusals(df, RULES)
    assert (df["response"].fill_null("").str.len_chars().sum()) > rules_module.COMBINED_BELOW_CHARS  # whole: one by one
    pieces = pl.concat([classify_refusals(df.slice(start, 7), RULES) for start in range(0, df.height, 7)])
    assert pieces.equals(whole)
    assert whole["refused"].sum() > 20


@pytest.mark.slow
@pytest.mark.parametrize("combined_below_chars", [0, 10**12], ids=["pattern_by_pattern", "alternations"])
def test_scores_equal_the_reference_on_public_training_replies(monkeypatch, combined_below_chars):
    df = training_sample()
    reference = reference_scores(df, RULES)
    assert (reference["score_official_line"] > 0).sum() >= 5  # SpeechMap has official-line replies
    same_as_reference(df, monkeypatch, combined_below_chars)


def test_a_group_that_cannot_be_one_alternation_is_matched_pattern_by_pattern(tmp_path, monkeypatch):
    # Each pattern is valid alone; joined, the repeated group name is not.
    rules = tmp_path / "rules.toml"
    rules.write_text('[hard]\nen = ["^(?P<w>sorry)", "(?P<w>cannot) help"]\n[pivot]\nen = ["however"]\n', encoding="utf-8")
    config = RefusalConfig(mode="rules", rules_path=str(rules))
    df = pl.DataFrame({"response": ["Sorry.", "I cannot help with that.", "Here is the answer.", "Sorry, however: facts."]})
    verdicts = classify_refusals(df, config)
    assert verdicts["refused"].to_list() == [True, True, False, True]
    assert rules_module.rule_scores(df, config).equals(reference_scores(df, config))
