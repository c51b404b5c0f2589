"""Rules mode of the refusal detector: multilingual regular expressions, fast and explainable.

Patterns come from a TOML file (default curate/resources/refusal_rules.toml) and are evaluated as
polars expressions over the whole column. Where a phrase sits matters more than whether it occurs:
"I can't help with that" at the start of a short reply is a refusal, the same words deep inside a
long answer usually are not. So each kind is scored from (phrase near the start?, phrase anywhere?,
reply short / medium / long?), and answers that go on to answer ("however, here is...") or that
report positions rather than adopt them (critics, human-rights groups) are discounted.

Official line: topic vocabulary ("territorial integrity", "since ancient times", 社会稳定) is what a
neutral factual answer about Taiwan or Xinjiang uses too, so vocabulary alone scores nothing. A
reply counts as reciting the line only with an evasion structure: a `stance` phrase that adopts the
position in the state's own voice ("the Chinese government has always firmly...", 坚决反对,
"anti-China forces", 请遵守法律法规), together with more line phrases, and no reporting markers.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

import polars as pl

from curate.errors import ConfigError
from curate.identity import stamp
from curate.refusal.config import KINDS, RefusalConfig

RULES_PATH = Path(__file__).parent.parent / "resources" / "refusal_rules.toml"
GROUPS = (*KINDS, "stance", "pivot", "balance")
# Han, kana and Hangul carry roughly three Latin letters' worth of text each; weighting them keeps
# one "short reply" threshold meaningful across scripts.
_DENSE_SCRIPT = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"
DENSE_SCRIPT_WEIGHT = 3


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------


def rules_file(path: str | None = None) -> Path:
    file = Path(path) if path else RULES_PATH
    if not file.is_file():
        raise ConfigError(f"{file}: refusal rules file not found")
    return file


def load_rules(path: str | None = None) -> dict[str, tuple[str, ...]]:
    """Patterns per group (all languages together), each prefixed case-insensitive and validated."""
    file = rules_file(path)
    # Keyed by modification time and size too: an edited rules file is reread (`curate serve`).
    return _load_rules(file, *stamp(file)[1:])


@functools.lru_cache(maxsize=8)
def _load_rules(file: Path, mtime_ns: int, size: int) -> dict[str, tuple[str, ...]]:
    try:
        tree = tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from exc
    unknown = set(tree) - set(GROUPS)
    if unknown:
        raise ConfigError(f"{file}: unknown rule groups {sorted(unknown)}; expected {list(GROUPS)}")
    rules: dict[str, tuple[str, ...]] = {}
    probe = pl.Series([""], dtype=pl.String)
    for group in GROUPS:
        patterns: list[str] = []
        for language, items in tree.get(group, {}).items():
            if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
                raise ConfigError(f"{file}: {group}.{language} must be a list of strings")
            for pattern in items:
                try:
                    probe.str.contains(f"(?i){pattern}")
                except pl.exceptions.ComputeError as exc:
                    raise ConfigError(f"{file}: {group}.{language}: bad pattern {pattern!r}: {exc}") from exc
                patterns.append(f"(?i){pattern}")
        rules[group] = tuple(patterns)
    return rules


def length_units(col: pl.Expr) -> pl.Expr:
    """Characters, with Han/kana/Hangul counted DENSE_SCRIPT_WEIGHT times."""
    return col.str.len_chars() + (DENSE_SCRIPT_WEIGHT - 1) * col.str.count_matches(_DENSE_SCRIPT)


def _alternation(patterns: tuple[str, ...]) -> str:
    """One regex that matches where any of `patterns` does (each keeps its own inline flags)."""
    return "|".join(f"(?:{p})" for p in patterns)


@functools.lru_cache(maxsize=64)
def _combinable(patterns: tuple[str, ...]) -> bool:
    """Whether the patterns compile as one alternation (a rules file may repeat a group name, or
    outgrow the regex size limit; then they are matched one by one)."""
    try:
        pl.Series([""], dtype=pl.String).str.contains(_alternation(patterns))
    except pl.exceptions.ComputeError:
        return False
    return True


def _any_of(col: pl.Expr, patterns: tuple[str, ...], combined: bool) -> pl.Expr:
    if not patterns:
        return pl.lit(False)
    if combined and _combinable(patterns):
        return col.str.contains(_alternation(patterns))
    # One expression per pattern for large frames: a case-insensitive Unicode alternation of all of
    # them is about 10x slower per row in the regex engine (measured in bench/refusal_rules.py).
    return pl.any_horizontal([col.str.contains(p) for p in patterns])


def _distinct_hits(col: pl.Expr, patterns: tuple[str, ...]) -> pl.Expr:
    if not patterns:
        return pl.lit(0, dtype=pl.Int32)
    return pl.sum_horizontal([col.str.contains(p).cast(pl.Int32) for p in patterns])


# Below this many characters in a call, a group's patterns are matched as one alternation. Polars
# keeps only the 32 regexes it compiled last (per thread), so the ~250 single patterns are compiled
# again on every call (~0.15 s), while the few alternations stay compiled across calls: a small call
# costs milliseconds. The alternations match about 3 us per character against the single patterns'
# fraction of that, so larger calls take the single patterns (bench/refusal_rules.py measures both).
# Both give the same flags (tests/test_refusal_rules_fast.py).
COMBINED_BELOW_CHARS = 40_000
_HIT_COUNTS = ("stance", "official_line", "balance")


def _hit_flags(text: pl.Series, config: RefusalConfig, rules: dict[str, tuple[str, ...]], combined: bool) -> pl.DataFrame:
    """Per row: which groups a phrase matches near the start (`lead_*`) or anywhere (`any_*`), the
    length units and the distinct stance, official-line and balance phrases matched. The counts only
    matter where a stance phrase matches (no stance, no official line), so they are computed for
    those rows alone and are 0 elsewhere."""
    col, head = pl.col("text"), pl.col("text").str.slice(0, config.lead_chars)
    flags = text.to_frame("text").select(
        length_units(col).alias("units"), (col.str.len_chars() == 0).alias("empty"),
        _any_of(head, rules["hard"], combined).alias("lead_hard"), _any_of(col, rules["hard"], combined).alias("any_hard"),
        _any_of(head, rules["deflection"], combined).alias("lead_deflection"),
        _any_of(col, rules["deflection"], combined).alias("any_deflection"),
        _any_of(col, rules["pivot"], combined).alias("pivot"),
        _any_of(head, rules["stance"], combined).alias("lead_stance"), _any_of(col, rules["stance"], combined).alias("any_stance"),
    )
    rows = flags.select(pl.arg_where(pl.col("any_stance"))).to_series()
    zeros = pl.zeros(flags.height, dtype=pl.Int32, eager=True)
    if rows.is_empty():  # polars compiles a pattern even for no rows
        return flags.with_columns(zeros.alias(g) for g in _HIT_COUNTS)
    counts = text.gather(rows).to_frame("text").select([_distinct_hits(col, rules[g]).alias(g) for g in _HIT_COUNTS])
    return flags.with_columns(zeros.scatter(rows, counts[g]).alias(g) for g in _HIT_COUNTS)


def _position_score(lead: pl.Expr, anywhere: pl.Expr, short: pl.Expr, long: pl.Expr, pivot: pl.Expr, s: dict[str, float]) -> pl.Expr:
    return (
        pl.when(lead & short).then(s["lead_short"])
        .when(lead & ~long & ~pivot).then(s["lead_medium"])
        .when(lead & ~long).then(s["lead_medium_pivot"])
        .when(lead).then(s["lead_long"])
        .when(anywhere & short).then(s["any_short"])
        .when(anywhere & ~long).then(s["any_medium"])
        .when(anywhere).then(s["any_long"])
        .otherwise(0.0)
    )


# Scores per position; a hard refusal at the start of a short reply is near-certain, a deflection
# phrase ("I have no personal opinions") is often followed by a real answer, so it weighs less.
_HARD = {"lead_short": 0.95, "lead_medium": 0.85, "lead_medium_pivot": 0.45, "lead_long": 0.3,
         "any_short": 0.75, "any_medium": 0.35, "any_long": 0.1}
_DEFLECT = {"lead_short": 0.85, "lead_medium": 0.45, "lead_medium_pivot": 0.3, "lead_long": 0.15,
            "any_short": 0.7, "any_medium": 0.3, "any_long": 0.1}


def rule_scores(df: pl.DataFrame, config: RefusalConfig, response_col: str = "response") -> pl.DataFrame:
    """Per-kind scores (score_hard, score_deflection, score_official_line) plus the combined score."""
    rules = load_rules(config.rules_path)
    text = df.select(pl.col(response_col).fill_null("").str.strip_chars()).to_series()
    hits = _hit_flags(text, config, rules, combined=(text.str.len_chars().sum() or 0) < COMBINED_BELOW_CHARS)
    short = pl.col("units") <= config.short_units
    long = pl.col("units") > config.long_units
    pivot = pl.col("pivot")

    hard = _position_score(pl.col("lead_hard"), pl.col("any_hard"), short, long, pivot, _HARD)
    deflection = _position_score(pl.col("lead_deflection"), pl.col("any_deflection"), short, long, pivot, _DEFLECT)

    vocabulary, stance = pl.col("official_line"), pl.col("stance")
    balance_hits = pl.col("balance").clip(0, 3)
    line_hits = vocabulary + stance
    # No stance phrase, no official line: the vocabulary is shared with neutral factual answers.
    official = (
        pl.when(stance == 0).then(0.0)
        .when(line_hits >= 3).then(0.85)
        .when(line_hits == 2).then(0.65)
        .when(pl.col("lead_stance") & short).then(0.55)
        .otherwise(0.15)
    )
    # Reporting a position (critics, "Beijing claims") is the opposite of adopting it.
    official = ((official - 0.2 * balance_hits) * pl.when(long).then(0.8).otherwise(1.0)).clip(0.0, 1.0)

    scores = hits.select(
        hard.alias("score_hard"), deflection.alias("score_deflection"), official.alias("score_official_line"),
        pl.col("empty").alias("_empty"),
    )
    # Noisy-or: two weak signals of different kinds add up, one strong signal dominates.
    combined = 1.0 - (1.0 - pl.col("score_hard")) * (1.0 - pl.col("score_deflection")) * (1.0 - pl.col("score_official_line"))
    return scores.with_columns(combined.round(4).alias("score"))


def classify_rules(df: pl.DataFrame, config: RefusalConfig, response_col: str = "response") -> pl.DataFrame:
    scores = rule_scores(df, config, response_col)
    kind_scores = [pl.col(f"score_{k}") for k in KINDS]
    best = pl.concat_list(kind_scores).list.arg_max()
    verdict = scores.select(
        pl.when(pl.col("_empty")).then(None).otherwise(pl.col("score") >= config.threshold).alias("refused"),
        pl.when(~pl.col("_empty") & (pl.col("score") >= config.threshold))
        .then(best.replace_strict(list(range(len(KINDS))), list(KINDS), return_dtype=pl.String))
        .otherwise(None).alias("refusal_kind"),
        pl.when(pl.col("_empty")).then(None).otherwise(pl.col("score")).alias("refusal_score"),
        pl.lit("rules").alias("detector"),
        pl.lit(None, dtype=pl.String).alias("judge_error"),
    )
    return pl.concat([df, verdict], how="horizontal")


