"""Answer generation: K candidates per translated question from the R1 endpoint, then filtering.

Every candidate ends in exactly one table: `answers/candidates` (status ok) or `answers/rejects`
(status rejected with a reject_reason, or status error when the LLM call failed). Checks run
cheapest first and the first failing check names the reason:

    llm_error         the LLM layer returned an error row (status error)
    empty             no answer text
    truncated         finish_reason == "length"
    missing_reasoning no reasoning captured (when require_reasoning)
    repetition_loop   the answer or reasoning repeats itself (n-gram duplication or repeated lines)
    too_short / too_long  answer length outside [min_answer_units, max_answer_units]
    wrong_language    fastText says the answer is in another language than the question
    refusal           the refusal detector says the answer refuses, deflects or recites the official line
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.config import Config, EndpointConfig, LangIdConfig, with_endpoint_defaults
from curate.ids import content_id
from curate.judge.signals import CODE_BLOCK, repeated_ngram_share
from curate.llm import usage_summary
from curate.llm.sampling import sample_candidates
from curate.progress import Advance
from curate.records import Candidate, conform
from curate.refusal import RefusalConfig, classify_refusals, describe_detector, length_units, refusal_files, with_refusal_defaults
from curate.stages.declaration import Stage, reads, row_count
from curate.tables import ANSWER_REJECTS, CANDIDATES, DEDUPED_TRANSLATIONS, TRANSLATIONS
from curate.text.langid import detect_languages, model_file
from curate.workspace import StageOutput

REJECT_REASONS = (
    "llm_error", "empty", "truncated", "missing_reasoning", "repetition_loop", "too_short", "too_long",
    "wrong_language", "refusal",
)


class AnswersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generator: EndpointConfig = Field(default_factory=EndpointConfig, description="The R1 (reasoning) endpoint.")
    candidates_per_prompt: int = Field(default=4, ge=1, description="K sampled candidates per translated question.")
    system_prompt: str | None = Field(default=None, description="R1 is usually run without one.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Sampling params for this stage (temperature, max_tokens...).")
    require_reasoning: bool = Field(default=True, description="Reject candidates whose reasoning is missing.")
    min_answer_units: int = Field(default=20, ge=0, description="Length units: characters, CJK counted 3.")
    max_answer_units: int = Field(default=30000, ge=1)
    repetition_ngram: int = Field(default=5, ge=2, description="Token n-gram size for the duplication check.")
    max_repeated_ngram_share: float = Field(default=0.4, gt=0, le=1, description="Share of n-grams that repeat an earlier one.")
    min_ngrams_for_repetition: int = Field(default=30, ge=1, description="Shorter texts are not checked for n-gram loops.")
    max_line_repeats: int = Field(default=6, ge=2, description="The same non-trivial line this many times is a loop.")
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    language_check_min_chars: int = Field(default=20, ge=1, description="Answers shorter than this skip the language check.")
    language_aliases: dict[str, list[str]] = Field(
        default_factory=lambda: {"zh": ["wuu", "yue"]}, description="Detected codes accepted for a question language.")
    refusal: RefusalConfig = Field(default_factory=RefusalConfig)
    judge: EndpointConfig | None = Field(default=None, description="Judge endpoint for refusal modes with an LLM.")


# ---------------------------------------------------------------------------------------------
# filters (each a plain function, so each reason can be tested on crafted text)
# ---------------------------------------------------------------------------------------------


def max_line_repeats(text: str, min_chars: int = 8) -> int:
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) >= min_chars]
    return max(Counter(lines).values(), default=0)


def is_repetition_loop(text: str | None, config: AnswersConfig) -> bool:
    if not text:
        return False
    share, count = repeated_ngram_share(text, config.repetition_ngram)
    if count >= config.min_ngrams_for_repetition and share > config.max_repeated_ngram_share:
        return True
    return max_line_repeats(text) >= config.max_line_repeats


def language_mismatch(answers: list[str | None], expected: list[str], config: AnswersConfig) -> list[str | None]:
    """For each answer: None if its language is fine or unknowable, else 'detected=xx (conf)'."""
    # Code blocks say nothing about the prose language and fool fastText.
    prose = [CODE_BLOCK.sub(" ", a) if a else "" for a in answers]
    langs, confs = detect_languages(prose, config.langid.model_path)
    out: list[str | None] = []
    for text, want, got, conf in zip(prose, expected, langs, confs, strict=True):
        accepted = {want, *config.language_aliases.get(want, [])}
        checkable = len(text.strip()) >= config.language_check_min_chars and conf >= config.langid.min_confidence
        out.append(f"detected={got} ({conf:.2f}), expected={want}" if checkable and got not in accepted else None)
    return out


def cheap_reject_reasons(candidates: pl.DataFrame, config: AnswersConfig) -> pl.DataFrame:
    """reject_reason and reject_detail from everything but the language and refusal checks."""
    if "truncated_in_reasoning" not in candidates.columns:
        candidates = candidates.with_columns(pl.lit(False).alias("truncated_in_reasoning"))
    answer = pl.col("answer").fill_null("").str.strip_chars()
    units = length_units(answer)
    reasoning_missing = pl.col("reasoning").fill_null("").str.strip_chars().str.len_chars() == 0
    loops = pl.Series(
        [is_repetition_loop(a, config) or is_repetition_loop(r, config)
         for a, r in candidates.select("answer", "reasoning").iter_rows()], dtype=pl.Boolean,
    ) if candidates.height else pl.Series([], dtype=pl.Boolean)
    return candidates.with_columns(_loop=loops).with_columns(
        pl.when(pl.col("status") == "error").then(pl.lit("llm_error"))
        .when(answer.str.len_chars() == 0).then(pl.lit("empty"))
        .when(pl.col("finish_reason") == "length").then(pl.lit("truncated"))
        # The output ran out inside the reasoning: whatever sits in `answer` is not an answer.
        .when(pl.col("truncated_in_reasoning").fill_null(False)).then(pl.lit("truncated"))
        .when(pl.lit(config.require_reasoning) & reasoning_missing).then(pl.lit("missing_reasoning"))
        .when(pl.col("_loop")).then(pl.lit("repetition_loop"))
        .when(units < config.min_answer_units).then(pl.lit("too_short"))
        .when(units > config.max_answer_units).then(pl.lit("too_long"))
        .otherwise(None).alias("reject_reason"),
        pl.when(units < config.min_answer_units).then(pl.format("{} length units < {}", units, pl.lit(config.min_answer_units)))
        .when(units > config.max_answer_units).then(pl.format("{} length units > {}", units, pl.lit(config.max_answer_units)))
        .otherwise(None).alias("reject_detail"),
    ).drop("_loop").with_columns(
        # Details only make sense next to the length reasons.
        pl.when(pl.col("reject_reason").is_in(["too_short", "too_long"])).then(pl.col("reject_detail"))
        .when(pl.col("reject_reason") == "llm_error").then(pl.col("error"))
        .otherwise(None).alias("reject_detail")
    )


def filter_candidates(
    candidates: pl.DataFrame, config: AnswersConfig, *, cache=None, progress: Advance | None = None
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, rejects) from raw candidates (columns: answer, reasoning, finish_reason, language,
    prompt, status, error, ...). Rejects get status rejected/error, reject_reason, reject_detail."""
    marked = cheap_reject_reasons(candidates, config).with_row_index("_row")

    pending = marked.filter(pl.col("reject_reason").is_null())
    if pending.height:
        mismatch = language_mismatch(pending["answer"].to_list(), pending["language"].to_list(), config)
        pending = pending.with_columns(
            pl.Series("_lang", mismatch, dtype=pl.String)
        ).with_columns(
            pl.when(pl.col("_lang").is_not_null()).then(pl.lit("wrong_language")).alias("reject_reason"),
            pl.col("_lang").alias("reject_detail"),
        ).drop("_lang")

    still = pending.filter(pl.col("reject_reason").is_null())
    if still.height:
        judged = classify_refusals(
            still, config.refusal, endpoint=config.judge or config.generator, cache=cache,
            response_col="answer", prompt_col="prompt", language_col="language", progress=progress,
        )
        refusal_detail = pl.format("{} ({}, score {})", pl.col("refusal_kind"), pl.col("detector"), pl.col("refusal_score"))
        judged = judged.with_columns(
            pl.when(pl.col("refused").fill_null(False)).then(pl.lit("refusal")).otherwise(None).alias("reject_reason"),
            pl.when(pl.col("refused").fill_null(False)).then(refusal_detail)
            # A failed judge call cannot clear an answer silently; record it on the kept row.
            .when(pl.col("judge_error").is_not_null()).then(pl.format("refusal judge failed: {}", "judge_error"))
            .otherwise(None).alias("reject_detail"),
        ).select(still.columns)
        decided = pl.concat([pending.filter(pl.col("reject_reason").is_not_null()), judged], how="vertical_relaxed")
    else:
        decided = pending
    merged = pl.concat([marked.filter(pl.col("reject_reason").is_not_null()), decided], how="vertical_relaxed").sort("_row").drop("_row")

    merged = merged.with_columns(
        pl.when(pl.col("reject_reason") == "llm_error").then(pl.lit("error"))
        .when(pl.col("reject_reason").is_not_null()).then(pl.lit("rejected"))
        .otherwise(pl.lit("ok")).alias("status")
    )
    return merged.filter(pl.col("status") == "ok"), merged.filter(pl.col("status") != "ok")


# ---------------------------------------------------------------------------------------------
# generation
# ---------------------------------------------------------------------------------------------


def candidate_requests(translations: pl.DataFrame, config: AnswersConfig) -> pl.DataFrame:
    """One request per usable translation × candidate index; request_id is the candidate_id."""
    usable = translations.filter((pl.col("status") == "ok") & pl.col("text").is_not_null())
    model = config.generator.model
    rows = []
    for tid, qid, lang, text in usable.select("translation_id", "question_id", "language", "text").iter_rows():
        for k in range(config.candidates_per_prompt):
            rows.append({
                "candidate_id": content_id("cand", text, model, k, tid), "translation_id": tid, "question_id": qid,
                "language": lang, "prompt": text, "candidate_index": k, "model": model,
            })
    schema = {"candidate_id": pl.String, "translation_id": pl.String, "question_id": pl.String, "language": pl.String,
              "prompt": pl.String, "candidate_index": pl.Int64, "model": pl.String}
    return pl.DataFrame(rows, schema=schema)


def generate_candidates(
    translations: pl.DataFrame, config: AnswersConfig, *, cache=None, progress: Advance | None = None, refresh: bool = False,
    prices: dict[str, dict[str, float]] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(raw candidate rows, the LLM layer's results for usage accounting)."""

    requests = candidate_requests(translations, config)
    return sample_candidates(requests, config.generator, stage="answers", system_prompt=config.system_prompt,
                             overrides=config.overrides, cache=cache, refresh=refresh, progress=progress, prices=prices)


def answers_stage(
    translations: pl.DataFrame, config: AnswersConfig, *, cache=None, progress: Advance | None = None,
    refresh: bool = False, prices: dict[str, dict[str, float]] | None = None,
) -> StageOutput:

    raw, results = generate_candidates(translations, config, cache=cache, progress=progress, refresh=refresh, prices=prices)
    kept, rejects = filter_candidates(raw, config, cache=cache)
    candidates = conform(kept, Candidate)
    rejects = pl.concat([conform(rejects, Candidate), rejects.select("reject_detail")], how="horizontal")
    report: dict[str, Any] = {
        "model": config.generator.model,
        "translations_used": int(translations.filter(pl.col("status") == "ok").height),
        "translations_skipped": int(translations.filter(pl.col("status") != "ok").height),
        "candidates_requested": raw.height,
        "kept": candidates.height,
        "rejected": int((rejects["status"] == "rejected").sum()),
        "errors": int((rejects["status"] == "error").sum()),
        "kept_by_language": {k: int(v) for k, v in candidates.group_by("language").len().sort("language").iter_rows()},
        "refusal_detector": describe_detector(config.refusal),
        "llm": usage_summary(results, "answers", prices or {}),
    }
    return StageOutput(tables={"candidates": candidates, "rejects": rejects}, report=report)


def _with_defaults(cfg: Config, raw: dict[str, Any]) -> dict[str, Any]:
    raw = with_endpoint_defaults(cfg.llm, raw, "generator", optional=("judge",))
    raw.setdefault("langid", cfg.langid.model_dump())
    return with_refusal_defaults(cfg.stages, raw)


STAGE = Stage(
    name="answers", run=answers_stage, config=AnswersConfig,
    summary="Sample K answers with reasoning per translated question and filter them (answers/candidates, answers/rejects).",
    reads={"translations": reads(DEDUPED_TRANSLATIONS, TRANSLATIONS)}, writes=(CANDIDATES, ANSWER_REJECTS),
    fill=_with_defaults, uses_llm=True, shard_by="translations",
    depends_on=lambda settings: [*refusal_files(settings.refusal), model_file(settings.langid.model_path)],
    progress_total=lambda inputs, settings: (
        row_count(inputs["translations"], pl.col("status") == "ok") * settings.candidates_per_prompt
    ),
)
