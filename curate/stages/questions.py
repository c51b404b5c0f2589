"""Expand each keyword into N diverse questions through the LLM layer.

One structured (JSON-schema) request per keyword and round. Output is parsed and validated (bad
output is retried by the LLM layer, then becomes an error row in `questions/rejects`). Each
question is then checked: long enough, in the keyword's language, and not a near-copy of a
question already kept for the same keyword (normalized-text equality, then character n-gram
cosine above `max_similarity`). Rejected questions go to `questions/rejects` with their reason.
Keywords that end a round with fewer than N questions are asked again (a fresh sample) up to
`max_rounds` times.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from curate.config import EndpointConfig
from curate.errors import InputError
from curate.ids import content_id, normalize_text
from curate.llm import complete_frame, usage_summary
from curate.progress import Advance, noop
from curate.prompts import render_prompt, template_path
from curate.records import Question, polars_schema
from curate.stages.declaration import Stage, reads
from curate.tables import KEYWORDS, QUESTION_REJECTS, QUESTIONS, SEEDS
from curate.text.langid import detect_languages, model_file
from curate.text.languages import language_name
from curate.text.tokenize import CJK_CHAR, tokenize
from curate.workspace import StageOutput

DEFAULT_STYLES = {
    "factual": "asks for concrete facts (who, what, when, where, how many)",
    "historical": "asks how it came about or how it changed over time",
    "explanatory": "asks why or how it works, its causes and consequences",
    "perspectives": "asks how different groups or governments see it and why they disagree",
}


class QuestionsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    per_keyword: int = Field(default=4, ge=1, le=20, description="Questions wanted per keyword.")
    styles: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_STYLES), description="Style name -> what it asks.")
    template: str = "question_expansion.j2"
    max_keywords: int | None = Field(default=None, ge=1, description="Use only the best-scored keywords.")
    seed_examples: int = Field(default=2, ge=0, description="Seed prompts shown in the prompt as examples (needs seeds).")
    max_similarity: float = Field(default=0.8, gt=0, le=1, description="Character n-gram cosine above which a question is a near-duplicate.")
    ngram: int = Field(default=3, ge=1, le=6)
    min_chars: int = Field(default=8, ge=1)
    max_chars: int = Field(default=400, ge=10)
    require_question_mark: bool = Field(default=True, description="Reject text that does not end as a question (? ？ ؟, Japanese か).")
    require_keyword: bool = Field(default=True, description="Reject questions that share no word with their keyword (off topic).")
    check_language: bool = Field(default=True, description="Reject questions fastText puts in another language.")
    min_language_confidence: float = Field(default=0.5, ge=0, le=1)
    langid_model_path: str | None = None
    max_rounds: int = Field(default=2, ge=1, description="Ask again (fresh sample) while a keyword has fewer than per_keyword.")
    overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.9, "max_tokens": 768})


class QuestionsStageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    questions: QuestionsConfig = Field(default_factory=QuestionsConfig)
    llm: EndpointConfig = Field(default_factory=EndpointConfig)


def response_schema(config: QuestionsConfig) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "minItems": 1,
                "maxItems": config.per_keyword,
                "items": {
                    "type": "object",
                    "properties": {
                        "style": {"type": "string", "enum": list(config.styles)},
                        "question": {"type": "string", "minLength": 1, "maxLength": config.max_chars},
                    },
                    "required": ["style", "question"],
                },
            }
        },
        "required": ["questions"],
    }


def parse_questions(content: str) -> list[dict[str, str | None]]:
    """[{style, question}] from a reply; raises ValueError on malformed output (the LLM layer retries)."""
    try:
        obj = json.loads(content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg}") from exc
    items = obj.get("questions") if isinstance(obj, dict) else None
    if not isinstance(items, list):
        raise ValueError("expected an object with a 'questions' array")
    out = []
    for item in items:
        if isinstance(item, str):
            item = {"question": item}
        if isinstance(item, dict) and isinstance(item.get("question"), str) and item["question"].strip():
            style = item.get("style")
            out.append({"style": style if isinstance(style, str) else None, "question": " ".join(item["question"].split())})
    if not out:
        raise ValueError("'questions' has no non-empty question")
    return out


# -- checks ------------------------------------------------------------------------------------------
QUESTION_END = re.compile(r"(?:[?？؟]|か[。.]?)[\s\"'”」』)）]*$")


def is_question(text: str) -> bool:
    return bool(QUESTION_END.search(text.strip()))


def mentions_keyword(text: str, keyword: str, language: str) -> bool:
    """Whether the question shares a content word (or, for CJK, a two-character piece) with its keyword."""

    haystack = normalize_text(text)
    words = [norm for chunk in tokenize(keyword, language) for norm, _ in chunk]
    for word in words:
        if CJK_CHAR.search(word):
            if any(word[i : i + 2] in haystack for i in range(max(1, len(word) - 1))):
                return True
        elif len(word) >= 3 and word in haystack:
            return True
    return not any(len(w) >= 3 or CJK_CHAR.search(w) for w in words)  # a keyword with no usable word cannot be checked


# -- diversity ---------------------------------------------------------------------------------------
_PUNCT = re.compile(r"[\W_]+")


def char_ngrams(text: str, n: int) -> Counter:
    """Character n-grams of the normalized text without punctuation or spaces (works for CJK too)."""
    s = _PUNCT.sub("", normalize_text(text))
    if len(s) <= n:
        return Counter([s]) if s else Counter()
    return Counter(s[i : i + n] for i in range(len(s) - n + 1))


def ngram_cosine(a: Counter, b: Counter) -> float:
    if not a or not b:
        return 0.0
    dot = sum(v * b[k] for k, v in a.items() if k in b)
    return dot / math.sqrt(sum(v * v for v in a.values()) * sum(v * v for v in b.values()))


def _bare(text: str) -> str:
    return _PUNCT.sub("", normalize_text(text))


def diversity_filter(
    texts: list[str], config: QuestionsConfig, kept: list[str] | None = None
) -> list[tuple[str, str] | None]:
    """Per text: None to keep it, or (reason, detail) to drop it, against `kept` and the texts kept before it."""
    kept = list(kept or [])
    kept_bare = {_bare(t): t for t in kept}
    kept_grams = [char_ngrams(t, config.ngram) for t in kept]
    reasons: list[tuple[str, str] | None] = []
    for text in texts:
        bare = _bare(text)
        if bare in kept_bare:
            reasons.append(("duplicate", f"same text as: {kept_bare[bare][:120]}"))
            continue
        grams = char_ngrams(text, config.ngram)
        sims = [ngram_cosine(grams, g) for g in kept_grams]
        best = max(range(len(sims)), key=sims.__getitem__, default=None)
        if best is not None and sims[best] > config.max_similarity:
            reasons.append(("near_duplicate", f"{sims[best]:.2f} similar to: {kept[best][:120]}"))
            continue
        reasons.append(None)
        kept.append(text)
        kept_bare[bare] = text
        kept_grams.append(grams)
    return reasons


# -- the stage ------------------------------------------------------------------------------------------
def _check_keywords(keywords: pl.DataFrame) -> None:
    for col in ("keyword_id", "keyword", "language"):
        if col not in keywords.columns:
            raise InputError("<keywords>", f"missing column; have {keywords.columns}", field=col)


def _prompts(keywords: pl.DataFrame, seeds: pl.DataFrame | None, config: QuestionsConfig) -> list[str]:

    seed_text = dict(seeds.select("seed_id", "text").iter_rows()) if seeds is not None and config.seed_examples else {}
    styles = [{"name": k, "description": v} for k, v in config.styles.items()][: config.per_keyword]
    prompts = []
    for row in keywords.iter_rows(named=True):
        examples = [seed_text[s] for s in (row.get("seed_ids") or []) if s in seed_text][: config.seed_examples]
        prompts.append(render_prompt(
            config.template, keyword=row["keyword"], language=language_name(row["language"]),
            n=config.per_keyword, styles=styles, seeds=examples,
        ))
    return prompts


def expand_questions(
    keywords: pl.DataFrame,
    config: QuestionsConfig,
    *,
    endpoint: EndpointConfig,
    cache: Any = None,
    seeds: pl.DataFrame | None = None,
    progress: Advance | None = None,
    refresh: bool = False,
    complete: Callable[..., pl.DataFrame] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, list[pl.DataFrame]]:
    """(questions with status ok, rejects with reject_reason, raw LLM results) for a Keyword table.

    `complete` replaces curate.llm.complete_frame (same signature); tests use it to inject faults.
    """
    complete = complete or complete_frame
    _check_keywords(keywords)
    if config.max_keywords is not None:
        keywords = keywords.sort("score", descending=True).head(config.max_keywords) if "score" in keywords.columns else keywords.head(config.max_keywords)
    advance = progress or noop
    prompts = _prompts(keywords, seeds, config)
    rows = keywords.with_columns(pl.Series("prompt", prompts, dtype=pl.String))
    has_topic = "topic" in rows.columns
    kept: dict[str, list[str]] = {kid: [] for kid in rows["keyword_id"]}
    accepted: list[dict[str, Any]] = []
    rejects: list[dict[str, Any]] = []
    results_log: list[pl.DataFrame] = []
    pending = rows
    for round_index in range(config.max_rounds):
        if pending.height == 0:
            break
        requests = pending.select(
            (pl.col("keyword_id") + f":{round_index}").alias("request_id"), "prompt",
            pl.lit(round_index, pl.Int64).alias("candidate_index"),
        )
        results = complete(
            requests, endpoint, stage="questions", cache=cache, refresh=refresh, response_schema=response_schema(config),
            validate=parse_questions, overrides=config.overrides, progress=advance if round_index == 0 else None,
        )
        results_log.append(results)
        produced: list[dict[str, Any]] = []
        for kw, res in zip(pending.iter_rows(named=True), results.iter_rows(named=True), strict=True):
            base = {"keyword_id": kw["keyword_id"], "keyword": kw["keyword"], "language": kw["language"],
                    "topic": kw["topic"] if has_topic else None}
            if res["status"] != "ok":
                rejects.append({**base, "question_id": content_id("question-error", f"round {round_index}", kw["keyword_id"]),
                                "text": "", "style": None, "status": "error", "error": res["error"] or "llm error",
                                "reject_reason": "llm_error", "reject_detail": None})
                continue
            for item in parse_questions(res["parsed"] or res["content"]):
                style = item["style"] if item["style"] in config.styles else None
                produced.append({**base, "text": item["question"], "style": style})
        if produced and config.check_language:
            langs, confs = detect_languages([p["text"] for p in produced], config.langid_model_path)
        else:
            langs, confs = [None] * len(produced), [0.0] * len(produced)
        for item, lang, conf in zip(produced, langs, confs, strict=True):
            item["question_id"] = content_id("question", item["text"], item["keyword_id"])
            reason: tuple[str, str] | None = None
            if len(item["text"]) < config.min_chars:
                reason = ("too_short", f"{len(item['text'])} < {config.min_chars} characters")
            elif len(item["text"]) > config.max_chars:
                reason = ("too_long", f"{len(item['text'])} > {config.max_chars} characters")
            elif _bare(item["text"]) == _bare(item["keyword"]):
                reason = ("only_keyword", "the question is the keyword itself")
            elif lang is not None and lang != item["language"] and conf >= config.min_language_confidence:
                reason = ("wrong_language", f"detected {lang} ({conf:.2f}), expected {item['language']}")
            elif config.require_question_mark and not is_question(item["text"]):
                reason = ("not_a_question", "does not end with a question mark")
            elif config.require_keyword and not mentions_keyword(item["text"], item["keyword"], item["language"]):
                reason = ("off_topic", f"does not mention '{item['keyword']}'")
            elif len(kept[item["keyword_id"]]) >= config.per_keyword:
                reason = ("over_quota", f"already {config.per_keyword} questions for this keyword")
            else:
                reason = diversity_filter([item["text"]], config, kept[item["keyword_id"]])[0]
            if reason is None:
                kept[item["keyword_id"]].append(item["text"])
                accepted.append({**item, "status": "ok", "error": None})
            else:
                rejects.append({**item, "status": "rejected", "error": None, "reject_reason": reason[0], "reject_detail": reason[1]})
        pending = pending.filter(pl.col("keyword_id").map_elements(lambda k: len(kept[k]) < config.per_keyword, return_dtype=pl.Boolean))
    schema = polars_schema(Question)
    questions = pl.DataFrame(accepted, schema=schema)
    reject_frame = pl.DataFrame(rejects, schema=dict(schema) | {"reject_reason": pl.String, "reject_detail": pl.String})
    return questions, reject_frame, results_log


def questions_stage(
    keywords: pl.DataFrame,
    config: QuestionsStageConfig,
    *,
    seeds: pl.DataFrame | None = None,
    cache: Any = None,
    progress: Advance | None = None,
    refresh: bool = False,
    prices: dict[str, dict[str, float]] | None = None,
    complete: Callable[..., pl.DataFrame] | None = None,
) -> StageOutput:

    questions, rejects, results = expand_questions(
        keywords, config.questions, endpoint=config.llm, cache=cache, seeds=seeds, progress=progress, refresh=refresh,
        complete=complete,
    )
    per_keyword = questions.group_by("keyword_id").len()
    report: dict[str, Any] = {
        "keywords": keywords.height if config.questions.max_keywords is None else min(keywords.height, config.questions.max_keywords),
        "keywords_short_of_quota": int(
            (keywords.select("keyword_id").join(per_keyword, on="keyword_id", how="left")["len"].fill_null(0) < config.questions.per_keyword).sum()
        ),
        "by_style": {str(k): v for k, v in questions.group_by("style").len().sort("style", nulls_last=True).iter_rows()},
    }
    if results:
        report["llm_usage"] = usage_summary(pl.concat(results, how="diagonal_relaxed"), "questions", prices or {})
    return StageOutput(tables={"questions": questions, "rejects": rejects}, report=report)


def _questions_files(settings: QuestionsStageConfig) -> list[Path]:
    config = settings.questions
    return [template_path(config.template), *([model_file(config.langid_model_path)] if config.check_language else [])]


def _questions_total(inputs: Mapping[str, pl.DataFrame], settings: QuestionsStageConfig) -> int:
    total = inputs["keywords"].height
    return min(total, settings.questions.max_keywords) if settings.questions.max_keywords else total


STAGE = Stage(
    name="questions", run=questions_stage, config=QuestionsConfig,
    summary="Expand each keyword into N diverse questions through the LLM (structured output, diversity-filtered).",
    reads={"keywords": reads(KEYWORDS), "seeds": reads(SEEDS, when=lambda settings: settings.questions.seed_examples > 0)},
    writes=(QUESTIONS, QUESTION_REJECTS),
    settings=lambda cfg, section: QuestionsStageConfig(questions=section, llm=cfg.llm),
    # Not sharded: the diversity filter compares questions with each other.
    depends_on=_questions_files, uses_llm=True, progress_total=_questions_total,
    report_keys=("keywords_short_of_quota", "by_style"),
)
