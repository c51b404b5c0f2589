"""Refusal detector: does a response refuse, deflect, or give the official line instead of answering?

Two detectors, one API (`classify_refusals`):

- rules: multilingual regular expressions from a TOML file (default
  curate/resources/refusal_rules.toml), evaluated as polars expressions over the whole column.
  Where a phrase sits matters more than whether it occurs: "I can't help with that" at the start
  of a short reply is a refusal, the same words deep inside a long answer usually are not. So each
  kind is scored from (phrase near the start?, phrase anywhere?, reply short / medium / long?),
  and answers that go on to answer ("however, here is...") or that report positions rather than
  adopt them (critics, human-rights groups) are discounted.
- llm: a rubric template (curate/prompts/refusal_judge.j2) sent through the LLM layer with a JSON
  schema; the judge returns a verdict and a confidence.
- rules+llm: rules decide the clear cases; only rows whose rule score falls in the uncertain band
  go to the judge. A judge error falls back to the rules verdict (the error is kept in `judge_error`).

Output columns added to the input frame: refused (bool, null for empty/missing responses or judge
errors without a fallback), refusal_kind ("hard", "deflection", "official_line" or null),
refusal_score (0..1, higher = more refusal-like), detector ("rules" or "llm"), judge_error.
"""

from __future__ import annotations

import functools
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.config import EndpointConfig
from curate.errors import ConfigError
from curate.identity import stamp
from curate.llm import complete_frame
from curate.prompts import render_prompt, template_path

RULES_PATH = Path(__file__).parent / "resources" / "refusal_rules.toml"
KINDS = ("hard", "deflection", "official_line")
GROUPS = (*KINDS, "pivot", "balance")
JUDGE_VERDICTS = ("answer", *KINDS)
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": list(JUDGE_VERDICTS)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["verdict", "confidence"],
    "additionalProperties": False,
}
# Han, kana and Hangul carry roughly three Latin letters' worth of text each; weighting them keeps
# one "short reply" threshold meaningful across scripts.
_DENSE_SCRIPT = r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Hangul}]"
DENSE_SCRIPT_WEIGHT = 3


class RefusalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["rules", "llm", "rules+llm"] = "rules"
    rules_path: str | None = Field(default=None, description="Pattern file; default: the bundled refusal_rules.toml.")
    threshold: float = Field(default=0.5, ge=0, le=1, description="refused = refusal_score >= threshold.")
    lead_chars: int = Field(default=200, ge=1, description="A refusal phrase within this many leading characters counts as 'at the start'.")
    short_units: int = Field(default=400, ge=1, description="Replies up to this length are short (CJK characters count 3).")
    long_units: int = Field(default=1500, ge=1, description="Replies longer than this are long: phrases inside them weigh little.")
    uncertain_low: float = Field(default=0.15, ge=0, le=1, description="rules+llm: rule scores in [low, high] go to the judge.")
    uncertain_high: float = Field(default=0.85, ge=0, le=1)
    judge_template: str = Field(default="refusal_judge.j2", description="Bundled template name or a path.")
    judge_max_chars: int = Field(default=3000, ge=200, description="Longer replies are shown to the judge as head and tail.")
    judge_overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 64})


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------


def rules_file(path: str | None = None) -> Path:
    file = Path(path) if path else RULES_PATH
    if not file.is_file():
        raise ConfigError(f"{file}: refusal rules file not found")
    return file


def refusal_files(config: RefusalConfig) -> list[Path]:
    """The files a detector's verdicts depend on: its rules, and the judge's template if it has one."""
    files = [rules_file(config.rules_path)]
    if config.mode != "rules":
        files.append(template_path(config.judge_template))
    return files


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


def _any_of(col: pl.Expr, patterns: tuple[str, ...]) -> pl.Expr:
    if not patterns:
        return pl.lit(False)
    # One expression per pattern: a single case-insensitive Unicode alternation of all of them is
    # about 10x slower in the regex engine (measured in bench/refusal_rules.py).
    return pl.any_horizontal([col.str.contains(p) for p in patterns])


def _distinct_hits(col: pl.Expr, patterns: tuple[str, ...]) -> pl.Expr:
    if not patterns:
        return pl.lit(0, dtype=pl.Int32)
    return pl.sum_horizontal([col.str.contains(p).cast(pl.Int32) for p in patterns])


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
    text = pl.col(response_col).fill_null("").str.strip_chars()
    head = text.str.slice(0, config.lead_chars)
    units = length_units(text)
    short = units <= config.short_units
    long = units > config.long_units
    pivot = _any_of(text, rules["pivot"])

    hard = _position_score(_any_of(head, rules["hard"]), _any_of(text, rules["hard"]), short, long, pivot, _HARD)
    deflection = _position_score(_any_of(head, rules["deflection"]), _any_of(text, rules["deflection"]), short, long, pivot, _DEFLECT)

    official_hits = _distinct_hits(text, rules["official_line"])
    balance_hits = _distinct_hits(text, rules["balance"]).clip(0, 3)
    official_lead = _any_of(head, rules["official_line"])
    official = (
        pl.when(official_hits >= 3).then(0.85)
        .when(official_hits == 2).then(0.65)
        .when(official_lead & short).then(0.55)
        .when(official_hits == 1).then(0.15)
        .otherwise(0.0)
    )
    # Reporting a position (critics, "Beijing claims") is the opposite of adopting it.
    official = ((official - 0.2 * balance_hits) * pl.when(long).then(0.8).otherwise(1.0)).clip(0.0, 1.0)

    scores = df.select(
        hard.alias("score_hard"), deflection.alias("score_deflection"), official.alias("score_official_line"),
        (text.str.len_chars() == 0).alias("_empty"),
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


# ---------------------------------------------------------------------------------------------
# LLM judge
# ---------------------------------------------------------------------------------------------


def _clip_for_judge(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


def parse_judge_output(content: str) -> dict[str, Any]:
    """The judge's JSON; raises ValueError (so the LLM layer retries) when it is not usable."""
    try:
        obj = json.loads(content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"judge output is not JSON: {exc.msg}") from exc
    if not isinstance(obj, dict) or obj.get("verdict") not in JUDGE_VERDICTS:
        raise ValueError(f"judge verdict must be one of {list(JUDGE_VERDICTS)}")
    confidence = obj.get("confidence", 1.0)
    if not isinstance(confidence, int | float):
        raise ValueError("judge confidence must be a number")
    return {"verdict": obj["verdict"], "confidence": min(max(float(confidence), 0.0), 1.0)}


def judge_requests(df: pl.DataFrame, config: RefusalConfig, response_col: str, prompt_col: str, language_col: str) -> pl.DataFrame:

    has_prompt = prompt_col in df.columns
    has_language = language_col in df.columns
    prompts = []
    for i, row in enumerate(df.iter_rows(named=True)):
        prompts.append(
            render_prompt(
                config.judge_template,
                question=(row[prompt_col] or "") if has_prompt else "",
                response=_clip_for_judge(row[response_col] or "", config.judge_max_chars),
                language=(row[language_col] or "") if has_language else "",
            )
        )
    return pl.DataFrame({"request_id": [f"refusal-judge-{i}" for i in range(df.height)], "prompt": prompts}, schema={"request_id": pl.String, "prompt": pl.String})


def classify_llm(
    df: pl.DataFrame, config: RefusalConfig, endpoint: EndpointConfig, *, cache=None, response_col: str = "response",
    prompt_col: str = "prompt", language_col: str = "language", progress=None,
) -> pl.DataFrame:
    """Judge every row; a failed call leaves refused null with the error in judge_error."""

    empty = df[response_col].fill_null("").str.strip_chars().str.len_chars() == 0
    to_judge = df.filter(~empty)
    verdicts: list[dict[str, Any]] = []
    if to_judge.height:
        requests = judge_requests(to_judge, config, response_col, prompt_col, language_col)
        results = complete_frame(
            requests, endpoint, stage="refusal_judge", cache=cache, response_schema=JUDGE_SCHEMA,
            validate=parse_judge_output, overrides=config.judge_overrides, progress=progress,
        )
        for status, parsed, content, error in results.select("status", "parsed", "content", "error").iter_rows():
            if status != "ok":
                verdicts.append({"refused": None, "refusal_kind": None, "refusal_score": None, "judge_error": error or "judge call failed"})
                continue
            try:
                out = parse_judge_output(parsed if parsed is not None else content or "")
            except ValueError as exc:
                verdicts.append({"refused": None, "refusal_kind": None, "refusal_score": None, "judge_error": str(exc)})
                continue
            refused = out["verdict"] != "answer"
            score = out["confidence"] if refused else 1.0 - out["confidence"]
            verdicts.append({"refused": refused, "refusal_kind": out["verdict"] if refused else None,
                             "refusal_score": round(score, 4), "judge_error": None})
    schema = {"refused": pl.Boolean, "refusal_kind": pl.String, "refusal_score": pl.Float64, "judge_error": pl.String}
    judged = pl.DataFrame(verdicts, schema=schema)
    # Put judged rows back in place; empty replies get null verdicts without a call.
    index = pl.Series("_i", range(df.height))
    judged = judged.with_columns(index.filter(~empty))
    full = pl.DataFrame({"_i": index}).join(judged, on="_i", how="left").sort("_i").drop("_i")
    return pl.concat([df, full.with_columns(pl.lit("llm").alias("detector"))], how="horizontal").select(
        *df.columns, "refused", "refusal_kind", "refusal_score", "detector", "judge_error"
    )


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------

OUTPUT_COLUMNS = ("refused", "refusal_kind", "refusal_score", "detector", "judge_error")


def classify_refusals(
    df: pl.DataFrame,
    config: RefusalConfig,
    *,
    endpoint: EndpointConfig | None = None,
    cache=None,
    response_col: str = "response",
    prompt_col: str = "prompt",
    language_col: str = "language",
    progress=None,
) -> pl.DataFrame:
    """`df` plus refused, refusal_kind, refusal_score, detector, judge_error (see module docstring).

    Existing output columns in `df` are replaced, so a frame can be re-classified.
    """
    if response_col not in df.columns:
        raise ValueError(f"classify_refusals: no column '{response_col}' (columns: {df.columns})")
    base = df.drop([c for c in OUTPUT_COLUMNS if c in df.columns])
    if config.mode != "rules" and endpoint is None:
        raise ConfigError(f"refusal mode '{config.mode}' needs a judge endpoint")
    if config.mode == "rules":
        return classify_rules(base, config, response_col)
    if config.mode == "llm":
        return classify_llm(base, config, endpoint, cache=cache, response_col=response_col, prompt_col=prompt_col,
                            language_col=language_col, progress=progress)

    ruled = classify_rules(base, config, response_col).with_row_index("_row")
    uncertain = pl.col("refusal_score").is_between(config.uncertain_low, config.uncertain_high)
    to_judge = ruled.filter(uncertain)
    if to_judge.height == 0:
        return ruled.drop("_row")
    judged = classify_llm(to_judge.drop(OUTPUT_COLUMNS), config, endpoint, cache=cache, response_col=response_col,
                          prompt_col=prompt_col, language_col=language_col, progress=progress)
    # Where the judge failed, the rules verdict stands; the error stays visible.
    judged = judged.select(
        "_row",
        pl.when(pl.col("refused").is_null()).then(None).otherwise(pl.col("refused")).alias("j_refused"),
        pl.col("refusal_kind").alias("j_kind"), pl.col("refusal_score").alias("j_score"), pl.col("judge_error").alias("j_error"),
    )
    merged = ruled.join(judged, on="_row", how="left")
    use_judge = pl.col("j_refused").is_not_null()
    return merged.with_columns(
        pl.when(use_judge).then(pl.col("j_refused")).otherwise(pl.col("refused")).alias("refused"),
        pl.when(use_judge).then(pl.col("j_kind")).otherwise(pl.col("refusal_kind")).alias("refusal_kind"),
        pl.when(use_judge).then(pl.col("j_score")).otherwise(pl.col("refusal_score")).alias("refusal_score"),
        pl.when(use_judge).then(pl.lit("llm")).otherwise(pl.col("detector")).alias("detector"),
        pl.col("j_error").alias("judge_error"),
    ).sort("_row").drop("_row", "j_refused", "j_kind", "j_score", "j_error")


def evaluate_refusals(
    df: pl.DataFrame, gold_col: str = "gold_refused", pred_col: str = "refused", gold_kind_col: str = "gold_kind"
) -> dict[str, Any]:
    """Precision, recall and F1 of `pred_col` against hand labels; rows without a verdict count as
    'undecided' and are scored as not refused (a detector that abstains must not look better).
    With a gold kind column, `kind_agreement` is the share of true positives whose kind matches."""
    gold = df[gold_col].cast(pl.Boolean)
    labeled = gold.is_not_null()
    pred = df[pred_col].fill_null(False).filter(labeled)
    gold = gold.filter(labeled)
    tp = int((pred & gold).sum())
    fp = int((pred & ~gold).sum())
    fn = int((~pred & gold).sum())
    tn = int((~pred & ~gold).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
    out = {"n": int(labeled.sum()), "tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall,
           "f1": f1, "undecided": int(df[pred_col].filter(labeled).is_null().sum())}
    if gold_kind_col in df.columns and "refusal_kind" in df.columns:
        both = df.filter(df[gold_col].fill_null(False) & df[pred_col].fill_null(False))
        out["kind_agreement"] = float((both[gold_kind_col] == both["refusal_kind"]).mean()) if both.height else None
    return out
