"""Cheap answer signals that need no LLM: length, repetition and the answer's language.

Shared by the answers filters (which reject on them) and the judge stage (which records them as
columns next to the LLM scores).
"""

from __future__ import annotations

import re

import polars as pl

from curate.text.langid import detect_languages
from curate.refusal import length_units

_DENSE_CHAR = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# One token per Han/kana/Hangul character (those scripts have no spaces), else one per word.
_TOKEN = re.compile(rf"[{_DENSE_CHAR}]|[^\s{_DENSE_CHAR}]+")
CODE_BLOCK = re.compile(r"```.*?(?:```|$)", re.S)


def repeated_ngram_share(text: str, n: int) -> tuple[float, int]:
    """(share of token n-grams that already occurred earlier in the text, number of n-grams)."""
    tokens = _TOKEN.findall(text.casefold())
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1.0 - len(set(grams)) / len(grams), len(grams)


def answer_signals(
    df: pl.DataFrame, *, ngram: int = 5, langid_model: str | None = None, min_language_confidence: float = 0.5,
    language_check_min_chars: int = 20, language_aliases: dict[str, list[str]] | None = None,
) -> pl.DataFrame:
    """answer_units, reasoning_units, repetition (share of repeated n-grams), detected_language,
    language_confidence and language_match (null when the answer is too short or fastText unsure)."""
    answers = df["answer"].fill_null("").to_list()
    prose = [CODE_BLOCK.sub(" ", a) for a in answers]  # code says nothing about the prose language
    langs, confs = detect_languages(prose, langid_model)
    aliases = language_aliases or {}
    matches: list[bool | None] = []
    for text, want, got, conf in zip(prose, df["language"].to_list(), langs, confs, strict=True):
        checkable = len(text.strip()) >= language_check_min_chars and conf >= min_language_confidence
        matches.append(got in {want, *aliases.get(want, [])} if checkable else None)
    reasoning = pl.col("reasoning") if "reasoning" in df.columns else pl.lit(None, pl.String)
    return df.select(
        length_units(pl.col("answer").fill_null("")).cast(pl.Int64).alias("answer_units"),
        length_units(reasoning.fill_null("")).cast(pl.Int64).alias("reasoning_units"),
    ).with_columns(
        pl.Series("repetition", [round(repeated_ngram_share(a, ngram)[0], 4) for a in answers], dtype=pl.Float64),
        pl.Series("detected_language", langs, dtype=pl.String),
        pl.Series("language_confidence", [round(c, 4) for c in confs], dtype=pl.Float64),
        pl.Series("language_match", matches, dtype=pl.Boolean),
    )
