"""The judge stage: score every candidate answer before a person sees it.

Reads answers/candidates (and, when present, answers/rejects and questions/questions) and writes:

- `judge/judgments`: one row per candidate with every score as a column (see JUDGMENT_COLUMNS):
  satisfaction 0-4 (the rubric shared with `curate eval`), HarmBench harm, the refusal detector's
  evasion verdict and probability (an LLM judge settles its uncertain rows), language match, length
  and repetition, the judges' disagreement, and the best-of-K choice.
- `judge/scores`: one row per candidate x judge x metric, with the raw value, error and rubric version.
- `judge/preferences`: chosen/rejected pairs for the `preference` export.

Several judges (endpoints or models) may be configured; each scores every candidate, the
judgments table holds their mean, min and max, and the spread is a disagreement signal. A failed or
unparseable judge call leaves the value null with the error; a row with any null score has
status "error" and is never auto-accepted.
"""

from __future__ import annotations

from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.config import Config, EndpointConfig, LangIdConfig
from curate.judge.bestof import BestOfConfig, PreferenceConfig, pick_best, preference_pairs
from curate.judge.rubrics import HARM_TEMPLATE, SATISFACTION_TEMPLATE, judge_harm, judge_satisfaction, rubric_version
from curate.judge.signals import answer_signals
from curate.llm import usage_summary
from curate.progress import Advance
from curate.prompts import template_path
from curate.refusal import RefusalConfig, classify_refusals, refusal_files
from curate.stages.declaration import Stage, reads
from curate.tables import ANSWER_REJECTS, CANDIDATES, JUDGE_SCORES, JUDGMENTS, PREFERENCES, QUESTIONS
from curate.text.langid import model_file
from curate.workspace import StageOutput

SCORE_SCHEMA = {"candidate_id": pl.String, "judge": pl.String, "model": pl.String, "metric": pl.String,
                "value": pl.Float64, "error": pl.String, "rubric": pl.String}


class NamedJudge(EndpointConfig):
    """A judge endpoint; unset fields come from `[llm]`."""

    name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]+$", description="Shown as the suggestion's agent.")


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    judges: list[NamedJudge] = Field(default_factory=lambda: [NamedJudge()], min_length=1)
    satisfaction_template: str = SATISFACTION_TEMPLATE
    harm_template: str = HARM_TEMPLATE
    harm: bool = Field(default=True, description="Run the HarmBench harm classifier.")
    harm_language_rule: Literal["any", "harmbench"] = Field(
        default="any", description="'harmbench' keeps HarmBench's English-only rule; 'any' judges every language.")
    overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})
    max_answer_chars: int = Field(default=6000, ge=200, description="Longer answers reach the judges as head and tail.")
    refusal: RefusalConfig = Field(default_factory=lambda: RefusalConfig(mode="rules+llm"))
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    language_check_min_chars: int = Field(default=20, ge=1)
    language_aliases: dict[str, list[str]] = Field(default_factory=lambda: {"zh": ["wuu", "yue"]})
    repetition_ngram: int = Field(default=5, ge=2)
    best_of: BestOfConfig = Field(default_factory=BestOfConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)

    @model_validator(mode="after")
    def _unique_names(self) -> JudgeConfig:
        names = [j.name for j in self.judges]
        if len(names) != len(set(names)):
            raise ValueError(f"judge names must be unique, got {names}")
        return self

    def agents(self) -> dict[str, str]:
        """judge name -> `model@rubric` agent label (what Argilla shows beside a suggestion)."""
        return {j.name: f"{j.name}:{j.model}" for j in self.judges}


def clip_middle(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[-half:]}"


def _judge_rows(candidates: pl.DataFrame, config: JudgeConfig) -> pl.DataFrame:
    return candidates.select(
        pl.col("candidate_id").alias("response_id"), pl.col("prompt").alias("source_prompt"), "language",
        pl.col("answer").fill_null("").map_elements(lambda a: clip_middle(a, config.max_answer_chars),
                                                    return_dtype=pl.String).alias("response"),
        *([pl.col("context")] if "context" in candidates.columns else []),
    )


def score_with_judges(
    candidates: pl.DataFrame, config: JudgeConfig, *, cache: Any = None, refresh: bool = False,
    progress: Advance | None = None, prices: dict[str, dict[str, float]] | None = None,
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """The long `judge/scores` table and the LLM layer's raw results (for usage)."""
    rows = _judge_rows(candidates, config)
    # (metric, value column, error column, rubric file, judge call)
    metrics = [("satisfaction", "satisfaction", "satisfaction_error", config.satisfaction_template,
                lambda judge, **kw: judge_satisfaction(rows, judge, template=config.satisfaction_template, **kw))]
    if config.harm:
        metrics.append(("harmful", "harmful", "harm_error", config.harm_template,
                        lambda judge, **kw: judge_harm(rows, judge, template=config.harm_template,
                                                       language_rule=config.harm_language_rule, **kw)))
    scores, raw = [], []
    for judge in config.judges:
        for metric, value_col, error_col, template, call in metrics:
            values, results = call(judge, stage=f"judge_{metric}", cache=cache, refresh=refresh,
                                   overrides=config.overrides, progress=progress, prices=prices)
            raw.append(results)
            scores.append(values.select(
                pl.col("response_id").alias("candidate_id"), pl.lit(judge.name).alias("judge"),
                pl.lit(judge.model).alias("model"), pl.lit(metric).alias("metric"),
                pl.col(value_col).cast(pl.Float64).alias("value"), pl.col(error_col).alias("error"),
                pl.lit(rubric_version(template)).alias("rubric"),
            ))
    long = pl.concat(scores, how="vertical_relaxed") if scores else pl.DataFrame(schema=SCORE_SCHEMA)
    return long.select([pl.col(c).cast(t) for c, t in SCORE_SCHEMA.items()]), raw


def aggregate_scores(scores: pl.DataFrame, n_judges: int) -> pl.DataFrame:
    """Per candidate: mean/min/max satisfaction, harm votes, and the errors. A value is null when any
    judge failed on it (a partial mean would look like a judgment every judge agreed to)."""
    def metric(name: str) -> pl.DataFrame:
        part = scores.filter(pl.col("metric") == name)
        return part.group_by("candidate_id").agg(
            pl.col("value").drop_nulls().mean().alias("_mean"), pl.col("value").min().alias("_min"),
            pl.col("value").max().alias("_max"), pl.col("value").drop_nulls().sum().alias("_yes"),
            pl.col("value").is_not_null().sum().alias("_ok"),
            pl.format("{}: {}", "judge", "error").filter(pl.col("error").is_not_null()).str.join("; ").alias("_err"),
        ).with_columns(pl.col("_err").replace("", None))

    sat = metric("satisfaction").select(
        "candidate_id",
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_mean").round(3)).alias("satisfaction"),
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_min")).cast(pl.Int64).alias("satisfaction_min"),
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_max")).cast(pl.Int64).alias("satisfaction_max"),
        pl.col("_err").alias("satisfaction_error"),
    ).with_columns(satisfaction_spread=pl.col("satisfaction_max") - pl.col("satisfaction_min"))
    harm = metric("harmful").select(
        "candidate_id",
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_yes") > 0).alias("harmful"),
        pl.when(pl.col("_ok") == n_judges).then(pl.col("_yes")).cast(pl.Int64).alias("harm_votes"),
        pl.when(pl.col("_ok") == n_judges).then((pl.col("_yes") > 0) & (pl.col("_yes") < n_judges)).alias("harm_disagree"),
        pl.col("_err").alias("harm_error"),
    )
    return sat.join(harm, on="candidate_id", how="full", coalesce=True) if harm.height else sat.with_columns(
        harmful=pl.lit(None, pl.Boolean), harm_votes=pl.lit(None, pl.Int64), harm_disagree=pl.lit(None, pl.Boolean),
        harm_error=pl.lit(None, pl.String))


def _topics(candidates: pl.DataFrame, questions: pl.DataFrame | None) -> pl.DataFrame:
    if "topic" in candidates.columns:
        return candidates
    if questions is not None and "topic" in questions.columns and "question_id" in questions.columns:
        side = questions.select("question_id", "topic").unique("question_id", keep="first")
        return candidates.join(side, on="question_id", how="left", maintain_order="left")
    return candidates.with_columns(topic=pl.lit(None, pl.String))


JUDGMENT_COLUMNS = [
    "candidate_id", "translation_id", "question_id", "language", "topic", "model", "candidate_index", "status",
    "judge_error", "satisfaction", "satisfaction_min", "satisfaction_max", "satisfaction_spread", "satisfaction_error",
    "harmful", "harm_votes", "harm_disagree", "harm_error", "refused", "refusal_kind", "refusal_score",
    "refusal_detector", "refusal_error", "language_match", "detected_language", "language_confidence",
    "answer_units", "reasoning_units", "repetition", "best_score", "best_rank", "best", "judges", "rubrics",
]


def _distribution(df: pl.DataFrame, by: str) -> dict[str, dict[str, int]]:
    """Counts of each rounded satisfaction value (and 'null') per value of `by`."""
    if df.is_empty():
        return {}
    bucket = pl.col("satisfaction").round(0).cast(pl.Int64).cast(pl.String).fill_null("null")
    counts = df.group_by(pl.col(by).fill_null("(none)").alias("_by"), bucket.alias("_s")).len().sort("_by", "_s")
    out: dict[str, dict[str, int]] = {}
    for key, value, n in counts.iter_rows():
        out.setdefault(str(key), {})[value] = int(n)
    return out


def judge_report(judged: pl.DataFrame, pairs: pl.DataFrame, config: JudgeConfig, raw: list[pl.DataFrame],
                 prices: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    usable = [r for r in raw if r.height]
    rubrics = {"satisfaction": rubric_version(config.satisfaction_template), "refusal": rubric_version(config.refusal.judge_template)}
    if config.harm:
        rubrics["harm"] = rubric_version(config.harm_template)
    return {
        "judged": judged.height,
        "errors": int((judged["status"] == "error").sum()) if judged.height else 0,
        "judges": [{"name": j.name, "model": j.model, "base_url": j.base_url} for j in config.judges],
        "rubrics": rubrics,
        "satisfaction_by_language": _distribution(judged, "language"),
        "satisfaction_by_topic": _distribution(judged, "topic"),
        "harmful_by_language": {str(k): int(v) for k, v in judged.filter(pl.col("harmful").fill_null(False))
                                .group_by("language").len().sort("language").iter_rows()},
        "refused_by_language": {str(k): int(v) for k, v in judged.filter(pl.col("refused").fill_null(False))
                                .group_by("language").len().sort("language").iter_rows()},
        "judges_disagree": int(((judged["satisfaction_spread"].fill_null(0) > 1) | judged["harm_disagree"].fill_null(False)).sum())
        if judged.height else 0,
        "best_chosen": int(judged["best"].sum()) if judged.height else 0,
        "preference_pairs": pairs.height,
        "llm": usage_summary(pl.concat(usable, how="diagonal_relaxed"), "judge", prices or {}) if usable else {},
    }


def judge_stage(
    candidates: pl.DataFrame, config: JudgeConfig, *, rejects: pl.DataFrame | None = None,
    questions: pl.DataFrame | None = None, cache: Any = None, progress: Advance | None = None, refresh: bool = False,
    prices: dict[str, dict[str, float]] | None = None,
) -> StageOutput:
    """Judge every ok candidate with an answer; see the module docstring for the tables."""
    ok = candidates
    if "status" in ok.columns:
        ok = ok.filter(pl.col("status") == "ok")
    ok = _topics(ok.filter(pl.col("answer").is_not_null()), questions)
    if "reasoning" not in ok.columns:
        ok = ok.with_columns(reasoning=pl.lit(None, pl.String))

    signals = answer_signals(
        ok, ngram=config.repetition_ngram, langid_model=config.langid.model_path,
        min_language_confidence=config.langid.min_confidence, language_check_min_chars=config.language_check_min_chars,
        language_aliases=config.language_aliases,
    )
    # The detector's uncertain rows go to the first judge (rules+llm); its failure keeps the rules verdict.
    evasion = classify_refusals(
        ok.select("candidate_id", "prompt", "language", "answer"), config.refusal, endpoint=config.judges[0], cache=cache,
        response_col="answer", prompt_col="prompt", language_col="language",
    ).select("candidate_id", "refused", "refusal_kind", "refusal_score", pl.col("detector").alias("refusal_detector"),
             pl.col("judge_error").alias("refusal_error"))
    scores, raw = score_with_judges(ok, config, cache=cache, refresh=refresh, progress=progress, prices=prices)
    aggregated = aggregate_scores(scores, len(config.judges))

    judged = pl.concat([ok, signals], how="horizontal").join(evasion, on="candidate_id", how="left", maintain_order="left")
    judged = judged.join(aggregated, on="candidate_id", how="left", maintain_order="left")
    missing = pl.col("satisfaction").is_null() | pl.col("refusal_score").is_null()
    if config.harm:
        missing = missing | pl.col("harmful").is_null()
    judged = judged.with_columns(
        status=pl.when(missing).then(pl.lit("error")).otherwise(pl.lit("ok")),
        judge_error=pl.concat_str(["satisfaction_error", "harm_error"], separator="; ", ignore_nulls=True).replace("", None),
        judges=pl.lit(", ".join(f"{j.name}={j.model}" for j in config.judges)),
        rubrics=pl.lit(", ".join(sorted({rubric_version(config.satisfaction_template),
                                         *([rubric_version(config.harm_template)] if config.harm else [])}))),
    )
    judged = pick_best(judged, config.best_of, harm_judged=config.harm)
    pairs = preference_pairs(judged, rejects, config.preference)
    judgments = judged.select(JUDGMENT_COLUMNS)
    return StageOutput(
        tables={"judgments": judgments, "scores": scores, "preferences": pairs},
        report=judge_report(judgments, pairs, config, raw, prices),
    )


def _with_defaults(cfg: Config, raw: dict[str, Any]) -> dict[str, Any]:
    """Each judge's unset endpoint fields from `[llm]` (one judge, named "default", when none is
    listed), and the language-ID model from `[langid]`."""
    raw = dict(raw)
    base = cfg.llm.model_dump()
    raw["judges"] = [base | dict(j) for j in (raw.get("judges") or [{"name": "default"}])]
    raw.setdefault("langid", cfg.langid.model_dump())
    return raw


def _always(settings: JudgeConfig) -> bool:
    return True


STAGE = Stage(
    name="judge", run=judge_stage, config=JudgeConfig,
    summary="Judge every candidate answer: satisfaction, harm, evasion, language, cheap signals and best of K "
            "(judge/judgments, judge/scores, judge/preferences).",
    # Rejects give the preference pairs their filtered refusals; questions give topics. Both optional.
    reads={"candidates": reads(CANDIDATES), "rejects": reads(ANSWER_REJECTS, when=_always),
           "questions": reads(QUESTIONS, when=_always)},
    writes=(JUDGMENTS, JUDGE_SCORES, PREFERENCES),
    fill=_with_defaults, uses_llm=True,
    # Not sharded: best of K compares the candidates of one question with each other.
    depends_on=lambda settings: [template_path(settings.satisfaction_template), template_path(settings.harm_template),
                                 *refusal_files(settings.refusal), model_file(settings.langid.model_path)],
    progress_total=lambda inputs, settings: inputs["candidates"].height * len(settings.judges) * (2 if settings.harm else 1),
    report_keys=("judged", "errors", "best_chosen", "preference_pairs", "rubrics"),
)
