"""The inverse filter: keep only safe behaviour, pick the best of K, route the uncertain to review.

The expected behaviour depends on the prompt (`expected`, from curate/stages/safety_prompts.py):

- harmful: keep a candidate only if it declines (the refusal detector says refused), explains why
  and offers a safe alternative (curate/resources/safety_response_rules.toml).
- benign:  keep a candidate only if it helps: a refusal is an over-refusal.

Both directions: a candidate the harm judge marks harmful is dropped, and the reasoning is judged
apart from the final answer, so a safe answer after a harmful chain of thought is dropped too.
Checks run cheapest first; the first failing check names the reason, kept in `reject_reason`:

    llm_error          the generation call failed (status error; a rerun retries it)
    empty              no answer text
    truncated          the output was cut off (finish_reason length, or it ended inside the reasoning)
    missing_reasoning  no chain of thought (when require_reasoning)
    harmful_reasoning  the harm judge says the reasoning carries out the harmful request
    harmful_answer     the harm judge says the answer does
    complied           harmful prompt, the answer does not decline
    no_explanation     harmful prompt, declined without saying why
    no_alternative     harmful prompt, declined without a safe alternative
    over_refusal       benign prompt, the answer refuses

Fail-safe: a candidate whose harm judgment (or LLM refusal judgment) failed is never released; it
goes to `safety_filter/review` with review_reason `harm_judge_failed` (`refusal_judge_failed`).

Both judges are the judge package's rubrics (curate/judge/rubrics.py), the ones the `judge` stage
and `curate eval` use: HarmBench's harm classifier on reasoning and answer, and the 0-4 satisfaction
rubric on the kept candidates, which the best of K ranks by (`score`, higher is better):

    harmful prompt:  score = satisfaction + refusal_weight * refusal_score   (the clearest decline
                     that still serves the user best: its explanation and safe alternative)
    benign prompt:   score = satisfaction - refusal_weight * refusal_score   (the most helpful answer)

Ties go to the lower candidate index, then the lower candidate id, so a rerun picks the same row.
A prompt whose best candidate has no score (its satisfaction judgment failed) goes to review
(`satisfaction_judge_failed`); one whose best candidate's refusal score lies in
[uncertain_low, uncertain_high] goes to review (`uncertain_best`) instead of
`safety_filter/selected`, the table releases mix in. Review rows carry `judge_notes` (why a person
must look) and the judges' verdicts, which `curate review push --source safety_filter/review`
sends as suggestions (docs/safety.md).
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.config import Config, EndpointConfig, with_endpoint_defaults
from curate.errors import ConfigError
from curate.judge.rubrics import HARM_TEMPLATE, SATISFACTION_TEMPLATE, judge_harm, judge_satisfaction, rubric_version
from curate.identity import stamp
from curate.llm import usage_summary
from curate.progress import Advance
from curate.prompts import template_path
# The refusal detector only through its public functions, so a replaced detector takes effect here.
from curate.refusal import RefusalConfig, classify_refusals, refusal_files
from curate.review.safety_notes import review_notes
from curate.stages.declaration import Stage, reads
from curate.tables import (
    SAFETY_CANDIDATES,
    SAFETY_KEPT,
    SAFETY_REJECTS,
    SAFETY_REVIEW,
    SAFETY_SELECTED,
)
from curate.workspace import StageOutput

RULES_PATH = Path(__file__).resolve().parent.parent / "resources" / "safety_response_rules.toml"
REJECT_REASONS = (
    "llm_error", "empty", "truncated", "missing_reasoning", "harmful_reasoning", "harmful_answer", "complied",
    "no_explanation", "no_alternative", "over_refusal",
)
REVIEW_REASONS = ("harm_judge_failed", "refusal_judge_failed", "satisfaction_judge_failed", "uncertain_best")


class SafetyFilterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    judge: EndpointConfig = Field(default_factory=EndpointConfig, description="The harm judge's endpoint (a strong model at full size).")
    harm_template: str = Field(default=HARM_TEMPLATE, description="HarmBench-style yes/no rubric: bundled name or a path.")
    judge_overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 32})
    judge_max_chars: int = Field(default=6000, ge=200, description="Longer texts are shown to the judge as head and tail.")
    require_reasoning: bool = Field(default=True, description="Drop candidates without a chain of thought.")
    refusal: RefusalConfig = Field(default_factory=RefusalConfig)
    refusal_judge: EndpointConfig | None = Field(default=None, description="Endpoint for refusal modes with an LLM (default: judge).")
    rules_path: str | None = Field(default=None, description="Explanation/alternative patterns; default: the bundled file.")
    require_explanation: bool = True
    require_alternative: bool = True
    satisfaction_template: str = Field(default=SATISFACTION_TEMPLATE, description="0-4 rubric the best of K ranks by.")
    satisfaction_overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})
    refusal_weight: float = Field(default=2.0, ge=0, description="Best of K: weight of the refusal score (docs/safety.md).")
    # Which best candidates cost a person's time, on the final score after the refusal cascade: narrower
    # than the cascade's judge band (refusal.uncertain_low/high) on purpose, and the judge routing's
    # detector_band (docs/safety.md).
    uncertain_low: float = Field(default=0.3, ge=0, le=1, description="A best candidate with a refusal score in [low, high] goes to review.")
    uncertain_high: float = Field(default=0.7, ge=0, le=1)

    @model_validator(mode="after")
    def _band(self) -> SafetyFilterConfig:
        if self.uncertain_low > self.uncertain_high:
            raise ValueError("uncertain_low must not exceed uncertain_high")
        return self


# ---------------------------------------------------------------------------------------------
# response rules and the harm judgment (each a plain function, testable on crafted text)
# ---------------------------------------------------------------------------------------------


def rules_file(path: str | None) -> Path:
    file = Path(path).expanduser() if path else RULES_PATH
    if not file.is_file():
        raise ConfigError(f"{file}: safety response rules not found")
    return file


@functools.lru_cache(maxsize=8)
def _load_rules(path: str, mtime_ns: int, size: int) -> dict[str, str]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    out = {}
    for group in ("explains", "alternative"):
        patterns = data.get(group)
        if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) for p in patterns):
            raise ConfigError(f"{path}: '{group}' must be a non-empty list of regular expressions")
        out[group] = "(?i)(" + "|".join(f"(?:{p})" for p in patterns) + ")"
    return out


def response_rules(path: str | None = None) -> dict[str, str]:
    """{group: one case-insensitive alternation} for the groups explains and alternative."""
    return _load_rules(*stamp(rules_file(path)))


def clip(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    half = max_chars // 2
    return f"{text[:half]}\n[...]\n{text[-half:]}"


def judge_candidate_harm(
    candidates: pl.DataFrame, config: SafetyFilterConfig, *, cache=None, refresh: bool = False,
    progress: Advance | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(candidate_id, harmful_reasoning, harmful_answer, harm_error; the judge's raw results).

    The reasoning and the answer are judged separately against the request (the last user turn).
    An empty reasoning has nothing to judge (harmful_reasoning false). One place to swap in
    another harm judge: everything downstream reads only these columns."""
    parts = []
    for part, column in (("reasoning", "reasoning"), ("answer", "answer")):
        texts = candidates.select(
            (pl.col("candidate_id") + f"#{part}").alias("response_id"), pl.col("prompt").alias("source_prompt"),
            pl.col(column).fill_null("").map_elements(lambda t: clip(t, config.judge_max_chars), return_dtype=pl.String)
            .alias("response"),
        ).filter(pl.col("response").str.strip_chars() != "")
        parts.append(texts)
    responses = pl.concat(parts)
    verdicts, results = judge_harm(
        responses, config.judge, template=config.harm_template, stage="safety_harm", cache=cache, refresh=refresh,
        overrides=config.judge_overrides, progress=progress)
    verdicts = verdicts.with_columns(
        pl.col("response_id").str.extract(r"^(.*)#", 1).alias("candidate_id"),
        pl.col("response_id").str.extract(r"#(\w+)$", 1).alias("part"),
    )

    def side(part: str) -> pl.DataFrame:
        return verdicts.filter(pl.col("part") == part).select(
            "candidate_id", pl.col("harmful").alias(f"harmful_{part}"), pl.col("harm_error").alias(f"_err_{part}"))

    out = candidates.select("candidate_id").join(side("reasoning"), on="candidate_id", how="left").join(
        side("answer"), on="candidate_id", how="left")
    has_reasoning = candidates.select(
        "candidate_id", (pl.col("reasoning").fill_null("").str.strip_chars() != "").alias("_has_reasoning"))
    out = out.join(has_reasoning, on="candidate_id", how="left").with_columns(
        pl.when(pl.col("_has_reasoning")).then(pl.col("harmful_reasoning")).otherwise(pl.lit(False)).alias("harmful_reasoning"),
        pl.concat_str(pl.col("_err_reasoning"), pl.col("_err_answer"), separator="; ", ignore_nulls=True).alias("harm_error"),
    ).with_columns(pl.when(pl.col("harm_error") == "").then(None).otherwise(pl.col("harm_error")).alias("harm_error"))
    return out.select("candidate_id", "harmful_reasoning", "harmful_answer", "harm_error"), results


def judge_candidate_satisfaction(
    candidates: pl.DataFrame, config: SafetyFilterConfig, *, cache=None, refresh: bool = False,
    progress: Advance | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(candidate_id, satisfaction 0-4, satisfaction_error; raw results): the shared rubric on the answer."""
    rows = candidates.select(
        "candidate_id", "language", pl.col("prompt").alias("source_prompt"),
        pl.col("answer").fill_null("").map_elements(lambda t: clip(t, config.judge_max_chars), return_dtype=pl.String)
        .alias("response"))
    return judge_satisfaction(
        rows, config.judge, id_col="candidate_id", template=config.satisfaction_template, stage="safety_satisfaction",
        cache=cache, refresh=refresh, overrides=config.satisfaction_overrides, progress=progress)


# ---------------------------------------------------------------------------------------------
# the filter
# ---------------------------------------------------------------------------------------------


def cheap_reasons(candidates: pl.DataFrame, config: SafetyFilterConfig) -> pl.DataFrame:
    answer = pl.col("answer").fill_null("").str.strip_chars()
    reasoning_missing = pl.col("reasoning").fill_null("").str.strip_chars().str.len_chars() == 0
    return candidates.with_columns(
        pl.when(pl.col("status") != "ok").then(pl.lit("llm_error"))
        .when(answer.str.len_chars() == 0).then(pl.lit("empty"))
        .when(pl.col("finish_reason") == "length").then(pl.lit("truncated"))
        .when(pl.col("truncated_in_reasoning").fill_null(False)).then(pl.lit("truncated"))
        .when(pl.lit(config.require_reasoning) & reasoning_missing).then(pl.lit("missing_reasoning"))
        .otherwise(None).alias("reject_reason"),
        pl.when(pl.col("status") != "ok").then(pl.col("error")).otherwise(None).alias("reject_detail"),
    )


def behaviour_reasons(judged: pl.DataFrame, config: SafetyFilterConfig) -> pl.DataFrame:
    """reject_reason / review_reason from the harm verdicts, the refusal verdict and the rules."""
    harmful = pl.col("expected") == "harmful"
    refused = pl.col("refused")
    reason = (
        pl.when(pl.col("harm_error").is_not_null()).then(None)
        .when(pl.col("harmful_reasoning").fill_null(False)).then(pl.lit("harmful_reasoning"))
        .when(pl.col("harmful_answer").fill_null(False)).then(pl.lit("harmful_answer"))
        .when(refused.is_null()).then(None)
        .when(harmful & ~refused).then(pl.lit("complied"))
        .when(harmful & pl.lit(config.require_explanation) & ~pl.col("explains")).then(pl.lit("no_explanation"))
        .when(harmful & pl.lit(config.require_alternative) & ~pl.col("offers_alternative")).then(pl.lit("no_alternative"))
        .when(~harmful & refused).then(pl.lit("over_refusal"))
    )
    review = (
        pl.when(pl.col("harm_error").is_not_null()).then(pl.lit("harm_judge_failed"))
        .when(reason.is_null() & refused.is_null()).then(pl.lit("refusal_judge_failed"))
    )
    detail = (
        pl.when(pl.col("harm_error").is_not_null()).then(pl.col("harm_error"))
        .when(refused.is_null()).then(pl.col("judge_error"))
        .when(reason.is_in(["complied", "over_refusal", "no_explanation", "no_alternative"]))
        .then(pl.format("{} (refusal score {})", pl.col("refusal_kind").fill_null("answer"), pl.col("refusal_score").round(2)))
    )
    return judged.with_columns(reject_reason=reason, review_reason=review, reject_detail=detail)


def safety_score(config: SafetyFilterConfig) -> pl.Expr:
    """The best-of-K score (module docstring); null when the satisfaction judgment failed."""
    sign = pl.when(pl.col("expected") == "harmful").then(1.0).otherwise(-1.0)
    return (pl.col("satisfaction").cast(pl.Float64) + sign * config.refusal_weight * pl.col("refusal_score")).round(4)


def best_of_k(kept: pl.DataFrame, config: SafetyFilterConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(selected: the best kept candidate per prompt, to_review: best candidates sent to review)."""
    scored = kept.with_columns(score=safety_score(config))
    best = scored.sort(["prompt_id", "score", "candidate_index", "candidate_id"],
                       descending=[False, True, False, False], nulls_last=True).unique(
        "prompt_id", keep="first", maintain_order=True)
    unscored = pl.col("score").is_null()
    uncertain = pl.col("refusal_score").is_between(config.uncertain_low, config.uncertain_high)
    review = best.filter(unscored | uncertain).with_columns(
        review_reason=pl.when(unscored).then(pl.lit("satisfaction_judge_failed")).otherwise(pl.lit("uncertain_best")),
        reject_detail=pl.when(unscored).then(pl.col("satisfaction_error")).otherwise(
            pl.format("refusal score {} in the uncertain band", pl.col("refusal_score").round(2))))
    return best.filter(~unscored & ~uncertain), review


HarmJudge = Callable[..., tuple[pl.DataFrame, pl.DataFrame]]
SatisfactionJudge = Callable[..., tuple[pl.DataFrame, pl.DataFrame]]


def filter_safety_candidates(
    candidates: pl.DataFrame, config: SafetyFilterConfig, *, cache=None, refresh: bool = False,
    progress: Advance | None = None, harm_judge: HarmJudge = judge_candidate_harm,
    satisfaction_judge: SatisfactionJudge = judge_candidate_satisfaction,
) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """{kept, rejects, selected, review} and the judges' raw results (for usage).

    `harm_judge(candidates, config, cache=, refresh=, progress=)` returns (candidate_id,
    harmful_reasoning, harmful_answer, harm_error) and its raw results; `satisfaction_judge` the
    same with (candidate_id, satisfaction, satisfaction_error). The defaults are the judge
    package's rubrics; everything downstream reads only these columns."""
    marked = cheap_reasons(candidates, config)
    pending = marked.filter(pl.col("reject_reason").is_null())
    verdicts, results = harm_judge(pending, config, cache=cache, refresh=refresh, progress=progress)
    judged = pending.drop("reject_reason", "reject_detail").join(verdicts, on="candidate_id", how="left")
    judged = classify_refusals(
        judged, config.refusal, endpoint=config.refusal_judge or config.judge, cache=cache,
        response_col="answer", prompt_col="prompt", language_col="language",
    )
    rules = response_rules(config.rules_path)
    judged = judged.with_columns(
        pl.col("answer").str.contains(rules["explains"]).alias("explains"),
        pl.col("answer").str.contains(rules["alternative"]).alias("offers_alternative"),
    )
    decided = behaviour_reasons(judged, config)
    kept = decided.filter(pl.col("reject_reason").is_null() & pl.col("review_reason").is_null()).drop("review_reason")
    # Only candidates that behaved are worth ranking: one satisfaction judgment each.
    scores, satisfaction_results = satisfaction_judge(kept, config, cache=cache, refresh=refresh, progress=progress)
    kept = kept.join(scores, on="candidate_id", how="left")
    results = pl.concat([r for r in (results, satisfaction_results) if r.height], how="diagonal_relaxed") if (
        results.height or satisfaction_results.height) else results
    to_review = decided.filter(pl.col("review_reason").is_not_null())
    cheap_rejects = marked.filter(pl.col("reject_reason").is_not_null())
    rejects = pl.concat([cheap_rejects, decided.filter(pl.col("reject_reason").is_not_null()).drop("review_reason")],
                        how="diagonal_relaxed").with_columns(
        pl.when(pl.col("reject_reason") == "llm_error").then(pl.lit("error")).otherwise(pl.lit("rejected")).alias("status"))
    selected, uncertain = best_of_k(kept, config)
    k = candidates.group_by("prompt_id").len("candidates_generated")
    selected = selected.join(k, on="prompt_id", how="left").with_columns(filtered_by=pl.lit(filter_description(config)))
    review = review_notes(pl.concat([to_review, uncertain], how="diagonal_relaxed"), judge=config.judge.model,
                          rubrics=_rubrics(config))
    tables = {"kept": kept.with_columns(status=pl.lit("ok")), "rejects": rejects, "selected": selected, "review": review}
    return tables, results


def filter_description(config: SafetyFilterConfig) -> str:
    """How the released rows were filtered, in words, for the release manifest and dataset card."""
    decline = "decline" + (", explain why" if config.require_explanation else "") + (
        ", offer a safe alternative" if config.require_alternative else "")
    return (f"inverse filter: harmful prompts keep answers that {decline}; benign prompts drop over-refusals "
            f"(refusal detector: {config.refusal.mode}); harm judge {config.judge.model} on reasoning and answer "
            f"apart; best of K by the judge's satisfaction plus (harmful) or minus (benign) the refusal score")


def _rubrics(config: SafetyFilterConfig) -> str:
    return f"{rubric_version(config.harm_template)}, {rubric_version(config.satisfaction_template)}"


def _counts(frame: pl.DataFrame, *cols: str) -> dict[str, int]:
    if frame.is_empty():
        return {}
    grouped = frame.group_by(*cols).len().sort(*cols, nulls_last=True)
    return {"/".join("none" if v is None else str(v) for v in row[:-1]): int(row[-1]) for row in grouped.iter_rows()}


def safety_filter_stage(
    candidates: pl.DataFrame, config: SafetyFilterConfig, *, cache=None, refresh: bool = False,
    progress: Advance | None = None, prices: dict[str, dict[str, float]] | None = None,
) -> StageOutput:
    tables, results = filter_safety_candidates(candidates, config, cache=cache, refresh=refresh, progress=progress)
    prompts = candidates.select("prompt_id", "expected").unique()
    answered = set(tables["selected"]["prompt_id"]) | set(tables["review"]["prompt_id"])
    report = {
        "candidates": candidates.height,
        "kept": tables["kept"].height,
        "rejected_by_reason": _counts(tables["rejects"], "reject_reason"),
        "review_by_reason": _counts(tables["review"], "review_reason"),
        "selected_by_subset": _counts(tables["selected"], "subset", "expected"),
        "prompts_without_answer": _counts(prompts.filter(~pl.col("prompt_id").is_in(list(answered))), "expected"),
        "judge_model": config.judge.model,
        "refusal_mode": config.refusal.mode,
        "llm": usage_summary(results, "safety_filter", prices or {}) if results.height else None,
    }
    return StageOutput(tables=tables, report=report)


def _with_defaults(cfg: Config, raw: dict[str, Any]) -> dict[str, Any]:
    return with_endpoint_defaults(cfg.llm, raw, "judge", optional=("refusal_judge",))


STAGE = Stage(
    name="safety_filter", run=safety_filter_stage, config=SafetyFilterConfig,
    summary="Inverse filter: keep declines for harmful prompts and help for benign ones, judge reasoning and answer "
            "for harm, pick the best of K (safety_filter/selected), route the uncertain to safety_filter/review.",
    reads={"candidates": reads(SAFETY_CANDIDATES)},
    writes=(SAFETY_KEPT, SAFETY_REJECTS, SAFETY_SELECTED, SAFETY_REVIEW),
    # At most two harm judgments per candidate (reasoning and answer) and one satisfaction judgment.
    progress_total=lambda inputs, settings: inputs["candidates"].height * 3,
    fill=_with_defaults, uses_llm=True,  # not sharded: best-of-K needs all K candidates of a prompt together
    depends_on=lambda settings: [
        *refusal_files(settings.refusal), rules_file(settings.rules_path), template_path(settings.harm_template),
        template_path(settings.satisfaction_template)],
)
