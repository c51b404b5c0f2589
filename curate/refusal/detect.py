"""The refusal detector's entry point: one function, one config, every mode.

Modes (RefusalConfig.mode):
- model (default): the trained fastText detector (curate/refusal/model.py), calibrated probability.
- rules: multilingual patterns (curate/refusal/rules.py), fast and explainable.
- llm: a rubric judge through the LLM layer (curate/refusal/judge.py).
- model+llm / rules+llm: the first detector decides clear cases; rows whose score falls in
  [uncertain_low, uncertain_high] go to the judge. A judge error keeps the first verdict (the error
  stays in `judge_error`).

Output columns added to the input frame: refused (bool; null when there is no verdict),
refusal_kind ("hard", "deflection", "official_line" or null), refusal_score (0..1, higher = more
refusal-like; calibrated in model mode), detector ("model", "rules", "llm"), judge_error, and
no_verdict_reason (why refused is null: "missing reply", "empty reply", "judge failed: ...").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from curate.config import EndpointConfig
from curate.errors import ConfigError
from curate.refusal.config import OUTPUT_COLUMNS, RefusalConfig
from curate.refusal.judge import classify_llm
from curate.prompts import template_path
from curate.refusal.model import SHIPPED_MODEL, card_path, classify_model, load_detector
from curate.refusal.reasoning import NO_ANSWER_REASON, final_answers
from curate.refusal.rules import classify_rules, rules_file

VERDICT_COLUMNS = (*OUTPUT_COLUMNS, "no_verdict_reason")
# Every mode judges the final answer: the reply with any inline reasoning section removed
# (curate/refusal/reasoning.py); the caller's column is left as it was.
_ANSWER = "_refusal_final_answer"


def refusal_files(config: RefusalConfig) -> list[Path]:
    """The files a detector's verdicts depend on (for stage fingerprints): its rules, the trained
    artefact and its card in model modes, and the judge's template in llm modes."""
    files = [rules_file(config.rules_path)]
    if config.mode.startswith("model"):
        model = Path(config.model_path) if config.model_path else SHIPPED_MODEL
        files += [model, card_path(model)]
    if config.uses_llm:
        files.append(template_path(config.judge_template))
    return files


def describe_detector(config: RefusalConfig) -> dict[str, Any]:
    """Which detector (and which trained artefact) produces verdicts under `config`, for reports."""
    out: dict[str, Any] = {"mode": config.mode, "threshold": config.threshold}
    if config.mode.startswith("model"):
        detector = load_detector(config.model_path)
        out |= {"model": detector.version, "model_sha256": detector.sha256, "model_path": str(detector.path)}
    if config.mode.startswith("rules"):
        out["rules_path"] = config.rules_path or "bundled refusal_rules.toml"
    if config.uses_llm:
        out["judge_template"] = config.judge_template
    return out


def _first_pass(base: pl.DataFrame, config: RefusalConfig, response_col: str) -> pl.DataFrame:
    return classify_model(base, config, response_col) if config.mode.startswith("model") else classify_rules(base, config, response_col)


def _with_reason(out: pl.DataFrame, response_col: str) -> pl.DataFrame:
    text = pl.col(response_col)
    return out.with_columns(
        pl.when(pl.col("refused").is_not_null()).then(None)
        .when(text.is_null()).then(pl.lit("missing reply"))
        .when(text.str.strip_chars().str.len_chars() == 0).then(pl.lit("empty reply"))
        .when(pl.col(_ANSWER).is_null()).then(pl.lit(NO_ANSWER_REASON))
        .when(pl.col("judge_error").is_not_null()).then(pl.lit("judge failed: ") + pl.col("judge_error"))
        .otherwise(pl.lit("no verdict")).alias("no_verdict_reason")
    ).drop(_ANSWER)


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
    """`df` plus the verdict columns (see module docstring).

    Existing verdict columns in `df` are replaced, so a frame can be re-classified.
    """
    if response_col not in df.columns:
        raise ValueError(f"classify_refusals: no column '{response_col}' (columns: {df.columns})")
    if df.schema[response_col] not in (pl.String, pl.Null):
        raise ValueError(f"classify_refusals: column '{response_col}' must be text, not {df.schema[response_col]}")
    base = df.drop([c for c in VERDICT_COLUMNS if c in df.columns])
    if base.schema[response_col] == pl.Null:
        base = base.with_columns(pl.col(response_col).cast(pl.String))
    if config.uses_llm and endpoint is None:
        raise ConfigError(f"refusal mode '{config.mode}' needs a judge endpoint")
    base = base.with_columns(final_answers(base[response_col]).alias(_ANSWER))
    reply_col, response_col = response_col, _ANSWER
    if config.mode in ("model", "rules"):
        return _with_reason(_first_pass(base, config, response_col), reply_col)
    if config.mode == "llm":
        return _with_reason(classify_llm(base, config, endpoint, cache=cache, response_col=response_col, prompt_col=prompt_col,
                                         language_col=language_col, progress=progress), reply_col)

    first = _first_pass(base, config, response_col).with_row_index("_row")
    uncertain = pl.col("refusal_score").is_between(config.uncertain_low, config.uncertain_high)
    to_judge = first.filter(uncertain)
    if to_judge.height == 0:
        return _with_reason(first.drop("_row"), reply_col)
    judged = classify_llm(to_judge.drop(OUTPUT_COLUMNS), config, endpoint, cache=cache, response_col=response_col,
                          prompt_col=prompt_col, language_col=language_col, progress=progress)
    # Where the judge failed, the first verdict stands; the error stays visible.
    judged = judged.select(
        "_row", pl.col("refused").alias("j_refused"), pl.col("refusal_kind").alias("j_kind"),
        pl.col("refusal_score").alias("j_score"), pl.col("judge_error").alias("j_error"),
    )
    merged = first.join(judged, on="_row", how="left")
    use_judge = pl.col("j_refused").is_not_null()
    out = merged.with_columns(
        pl.when(use_judge).then(pl.col("j_refused")).otherwise(pl.col("refused")).alias("refused"),
        pl.when(use_judge).then(pl.col("j_kind")).otherwise(pl.col("refusal_kind")).alias("refusal_kind"),
        pl.when(use_judge).then(pl.col("j_score")).otherwise(pl.col("refusal_score")).alias("refusal_score"),
        pl.when(use_judge).then(pl.lit("llm")).otherwise(pl.col("detector")).alias("detector"),
        pl.col("j_error").alias("judge_error"),
    ).sort("_row").drop("_row", "j_refused", "j_kind", "j_score", "j_error")
    return _with_reason(out, reply_col)


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
    n = int(labeled.sum())
    out = {"n": n, "accuracy": (tp + tn) / n if n else None, "tp": tp, "fp": fp, "fn": fn, "tn": tn, "precision": precision, "recall": recall,
           "f1": f1, "undecided": int(df[pred_col].filter(labeled).is_null().sum())}
    if gold_kind_col in df.columns and "refusal_kind" in df.columns:
        both = df.filter(df[gold_col].fill_null(False) & df[pred_col].fill_null(False))
        out["kind_agreement"] = float((both[gold_kind_col] == both["refusal_kind"]).mean()) if both.height else None
    return out
