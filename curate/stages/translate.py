"""Translate questions into the configured languages and verify every output.

Each (source text, target language) pair goes through a `Translator` (default: an LLM through
curate.llm). Each output is checked: not empty, in the target language (fastText), and — when a
multilingual embedding model is configured — close in meaning to the source (cross-lingual
cosine). A failed check or call is retried with a fresh sample (`candidate_index` = attempt, so
the LLM cache does not return the same bad output); after `max_attempts` the row is kept with
status `flagged` (an output that failed a check) or `error` (no output at all), never dropped.
The source text itself is a row for its own language, with no call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate.config import DEFAULT_LANGUAGES, EndpointConfig
from curate.errors import ConfigError, InputError
from curate.ids import content_id
from curate.llm import complete_frame, usage_summary
from curate.progress import Advance, noop
from curate.prompts import render_prompt, template_path
from curate.records import Translation, conform
from curate.stages.declaration import Stage, reads, row_count
from curate.tables import QUESTIONS, TRANSLATIONS
from curate.text.embeddings import embeddinggemma_path, is_model_folder, load_configured_model, resolve_model
from curate.text.langid import detect_languages, model_file
from curate.text.languages import base_language, check_language_codes, language_name
from curate.workspace import StageOutput

# fastText labels that count as the configured language (lid.176 splits some languages finely).
LANGUAGE_ALIASES = {"zh": {"zh", "wuu", "yue"}, "no": {"no", "nb", "nn"}}

TRANSLATION_SCHEMA = {
    "source_id": pl.String, "source_language": pl.String, "language": pl.String, "text": pl.String,
    "detected_language": pl.String, "language_confidence": pl.Float64, "faithfulness": pl.Float64,
    "attempts": pl.Int64, "status": pl.String, "error": pl.String,
}
TRANSLATION_COLUMNS = list(TRANSLATION_SCHEMA)


class TranslateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: list[str] | None = Field(default=None, description="Target languages; default: the top-level `languages`.")
    _known_languages = field_validator("languages")(check_language_codes)
    template: str = Field(default="translate.j2", description="Prompt template: bundled file name or a path.")
    max_attempts: int = Field(default=3, ge=1, description="Tries per pair before the row is flagged.")
    min_language_confidence: float = Field(default=0.5, ge=0, le=1, description="fastText confidence needed for the target language.")
    faithfulness_model: str | None = Field(
        default="auto",
        description="Multilingual sentence-transformers model (hub name or local path); 'auto': the assembled "
        "EmbeddingGemma-300M if present (scripts/fetch-embeddinggemma.py), else none; none: faithfulness is null.",
    )
    min_faithfulness: float = Field(default=0.5, ge=-1, le=1, description="Cosine to the source below this flags the row.")
    langid_model_path: str | None = None
    overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.2, "max_tokens": 512})


class Translator(Protocol):
    """Turns requests (request_id, text, source_language, language) into (request_id, text, error).

    `text` is None (with `error` set) when the call failed. `attempt` counts from 0; a translator
    that samples should give a fresh sample per attempt.
    """

    def __call__(self, requests: pl.DataFrame, *, attempt: int) -> pl.DataFrame: ...


def clean_translation(text: str | None) -> str | None:
    """Strip the wrapping small models add around a translation: quotes, fences, a label line."""
    if text is None:
        return None
    out = text.strip().strip("`").strip()
    lines = [line for line in out.splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].rstrip().endswith(":"):
        lines = lines[1:]
    out = "\n".join(lines).strip()
    if len(out) >= 2 and out[0] in "\"'“«「" and out[-1] in "\"'”»」":
        out = out[1:-1].strip()
    return out


@dataclass
class LLMTranslator:
    """The default translator: one chat completion per pair through curate.llm."""

    endpoint: EndpointConfig
    cache: Any = None
    template: str = "translate.j2"
    overrides: dict[str, Any] | None = None
    refresh: bool = False
    stage: str = "translate"
    progress: Advance | None = None
    results: list[pl.DataFrame] = field(default_factory=list)

    def __call__(self, requests: pl.DataFrame, *, attempt: int) -> pl.DataFrame:

        prompts = [
            render_prompt(
                self.template, text=row["text"], source_language=language_name(row["source_language"]),
                target_language=language_name(row["language"]), target_code=row["language"],
            )
            for row in requests.iter_rows(named=True)
        ]
        calls = pl.DataFrame({
            "request_id": requests["request_id"],
            "prompt": prompts,
            "candidate_index": [attempt] * requests.height,
        }, schema={"request_id": pl.String, "prompt": pl.String, "candidate_index": pl.Int64})
        results = complete_frame(
            calls, self.endpoint, stage=self.stage, cache=self.cache, refresh=self.refresh,
            overrides=self.overrides, progress=self.progress if attempt == 0 else None,
        )
        self.results.append(results)
        ok = pl.col("status") == "ok"
        return results.select(
            "request_id",
            pl.when(ok).then(pl.col("content").map_elements(clean_translation, return_dtype=pl.String)).alias("text"),
            # A cut-off translation is kept as text (it may be flagged) but never passes as ok.
            pl.when(~ok).then(pl.col("error").fill_null("llm error"))
            .when(pl.col("finish_reason") == "length").then(pl.lit("truncated (finish_reason=length)"))
            .otherwise(None).alias("error"),
        )


# -- faithfulness --------------------------------------------------------------------------------
FAITHFULNESS_HINT = (
    "set [stages.translate] faithfulness_model to a local sentence-transformers folder, a Hugging Face model "
    "in the local cache, 'embeddinggemma' after running scripts/fetch-embeddinggemma.py, or 'none'"
)


def resolve_faithfulness_model(setting: str | None) -> str | None:
    """The model setting to score faithfulness with, or None for none. `auto` is EmbeddingGemma
    when it is assembled: the bundled MiniLM is English-only, useless across languages."""
    if setting is None or setting.strip().lower() in ("", "none", "off"):
        return None
    if setting != "auto":
        return setting
    path = embeddinggemma_path()
    return str(path) if is_model_folder(path) else None


def cross_lingual_similarity(sources: list[str], translations: list[str], model: str) -> list[float]:
    """Cosine similarity of each translation to its source under a multilingual encoder."""
    if not sources:
        return []
    encoder = load_configured_model(model, hint=FAITHFULNESS_HINT, setting="faithfulness_model", device="cpu")
    a = encoder.encode(sources, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    b = encoder.encode(translations, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    return [float(x) for x in (a * b).sum(axis=1)]


# -- verification ----------------------------------------------------------------------------------
def verify_translations(outputs: pl.DataFrame, config: TranslateConfig, *, faithfulness: bool = True) -> pl.DataFrame:
    """Add detected_language, language_confidence, faithfulness and `problem` (None when the output passes).

    `outputs` has source_text, text, language, error.
    """
    texts = outputs["text"].to_list()
    langs, confs = detect_languages(texts, config.langid_model_path)
    faith: list[float | None] = [None] * len(texts)
    model = resolve_faithfulness_model(config.faithfulness_model) if faithfulness else None
    if model:
        idx = [i for i, t in enumerate(texts) if t and t.strip()]
        scores = cross_lingual_similarity(
            [outputs["source_text"][i] for i in idx], [texts[i] for i in idx], model
        )
        for i, s in zip(idx, scores, strict=True):
            faith[i] = s
    problems: list[str | None] = []
    for text, target, lang, conf, f, err in zip(
        texts, outputs["language"], langs, confs, faith, outputs["error"], strict=True
    ):
        accepted = LANGUAGE_ALIASES.get(target, {target})
        if err is not None:
            problems.append(f"translator error: {err}")
        elif not text or not text.strip():
            problems.append("empty translation")
        elif lang not in accepted:
            problems.append(f"wrong language: detected {lang} ({conf:.2f}), expected {target}")
        elif conf < config.min_language_confidence:
            problems.append(f"uncertain language: {lang} at {conf:.2f} < {config.min_language_confidence}")
        elif f is not None and f < config.min_faithfulness:
            problems.append(f"unfaithful: similarity to source {f:.2f} < {config.min_faithfulness}")
        else:
            problems.append(None)
    return outputs.with_columns(
        pl.Series("detected_language", langs, dtype=pl.String),
        pl.Series("language_confidence", confs, dtype=pl.Float64),
        pl.Series("faithfulness", faith, dtype=pl.Float64),
        pl.Series("problem", problems, dtype=pl.String),
    )


def _check_input(df: pl.DataFrame) -> None:
    missing = [c for c in ("source_id", "text", "language") if c not in df.columns]
    if missing:
        raise InputError("<translate input>", f"missing columns {missing}; have {df.columns}")
    bad = df.with_row_index("row").filter(pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""))
    if bad.height:
        raise InputError("<translate input>", "empty text", line=int(bad["row"][0]) + 1, field="text")
    dupes = df.group_by("source_id").len().filter(pl.col("len") > 1)
    if dupes.height:
        raise InputError("<translate input>", f"duplicate source_id '{dupes['source_id'][0]}'", field="source_id")


def translate_texts(
    df: pl.DataFrame,
    target_languages: list[str],
    config: TranslateConfig,
    *,
    endpoint: EndpointConfig | None = None,
    cache: Any = None,
    progress: Advance | None = None,
    translator: Translator | Callable[..., pl.DataFrame] | None = None,
    refresh: bool = False,
) -> pl.DataFrame:
    """Translate each row of `df` (source_id, text, language) into every target language.

    Returns one row per (source_id, target language): source_id, source_language, language, text,
    detected_language, language_confidence, faithfulness, attempts, status (ok/flagged/error),
    error. Rows whose source language is the target are the source text itself (attempts 0).
    """
    _check_input(df)
    advance = progress or noop
    targets = list(dict.fromkeys(base_language(t) for t in target_languages))
    if translator is None:
        if endpoint is None:
            raise ConfigError("translate_texts needs an endpoint (or a translator)")
        translator = LLMTranslator(endpoint, cache, config.template, config.overrides, refresh=refresh, progress=advance)
    # The LLM translator advances the bar per finished call; any other translator once per attempt.
    reports_progress = isinstance(translator, LLMTranslator) and translator.progress is not None
    sources = df.select(
        pl.col("source_id").cast(pl.String),
        pl.col("text").alias("source_text"),
        pl.col("language").cast(pl.String).map_elements(base_language, return_dtype=pl.String).alias("source_language"),
    )
    pairs = sources.join(pl.DataFrame({"language": targets}, schema={"language": pl.String}), how="cross")
    same = pairs.filter(pl.col("source_language") == pl.col("language"))
    pending = pairs.filter(pl.col("source_language") != pl.col("language")).with_columns(
        (pl.col("source_id") + "\x1f" + pl.col("language")).alias("request_id")
    )

    identity = verify_translations(
        same.with_columns(pl.col("source_text").alias("text"), pl.lit(None, pl.String).alias("error")), config,
        faithfulness=False,  # the source compared with itself says nothing
    ).with_columns(
        # The source is the question as written: its own language is a fact, not a check.
        pl.lit(0).alias("attempts"), pl.lit("ok").alias("status"), pl.lit(None, pl.String).alias("error"),
    )
    advance(identity.height)

    done: list[pl.DataFrame] = []
    last: pl.DataFrame | None = None
    for attempt in range(config.max_attempts):
        if pending.height == 0:
            break
        outputs = translator(
            pending.select("request_id", pl.col("source_text").alias("text"), "source_language", "language"),
            attempt=attempt,
        )
        if outputs.height != pending.height or set(outputs["request_id"]) != set(pending["request_id"]):
            raise RuntimeError("translator returned a different set of requests than it was given")
        checked = verify_translations(
            pending.join(outputs.select("request_id", "text", "error"), on="request_id", how="left"), config
        ).with_columns(pl.lit(attempt + 1).alias("attempts"))
        passed = checked.filter(pl.col("problem").is_null())
        done.append(passed.with_columns(pl.lit("ok").alias("status"), pl.lit(None, pl.String).alias("error")))
        if attempt == 0 and not reports_progress:
            advance(pending.height)
        last = checked.filter(pl.col("problem").is_not_null())
        pending = pending.join(last.select("request_id"), on="request_id", how="semi")
    if last is not None and last.height:
        done.append(
            last.with_columns(
                pl.when(pl.col("text").is_null()).then(pl.lit("error")).otherwise(pl.lit("flagged")).alias("status"),
                pl.format("after {} attempts: {}", pl.col("attempts"), pl.col("problem")).alias("error"),
            )
        )

    frames = [f.select(TRANSLATION_COLUMNS).cast(TRANSLATION_SCHEMA) for f in [identity, *done]]
    out = pl.concat(frames, how="vertical")
    order = {t: i for i, t in enumerate(targets)}
    return (
        out.with_columns(pl.col("language").replace_strict(order, return_dtype=pl.Int64).alias("_order"))
        .join(sources.with_row_index("_row").select("source_id", "_row"), on="source_id")
        .sort("_row", "_order")
        .drop("_row", "_order")
    )


class TranslateStageConfig(BaseModel):
    """Everything that shapes the translate stage's output (its fingerprint)."""

    model_config = ConfigDict(extra="forbid")

    translate: TranslateConfig = Field(default_factory=TranslateConfig)
    languages: list[str] = Field(default_factory=lambda: list(DEFAULT_LANGUAGES))
    llm: EndpointConfig = Field(default_factory=EndpointConfig)

    @property
    def target_languages(self) -> list[str]:
        return self.translate.languages or self.languages


def translate_stage(
    questions: pl.DataFrame,
    config: TranslateStageConfig,
    *,
    cache: Any = None,
    progress: Advance | None = None,
    translator: Translator | None = None,
    refresh: bool = False,
    prices: dict[str, dict[str, float]] | None = None,
) -> StageOutput:
    """Translate the ok rows of a Question table; one Translation row per question and language."""
    if "status" in questions.columns:
        questions = questions.filter(pl.col("status") == "ok")
    llm_translator = None
    if translator is None:
        llm_translator = LLMTranslator(
            config.llm, cache, config.translate.template, config.translate.overrides, refresh=refresh, progress=progress
        )
    out = translate_texts(
        questions.select(pl.col("question_id").alias("source_id"), "text", "language"),
        config.target_languages, config.translate, endpoint=config.llm, cache=cache,
        progress=progress, translator=translator or llm_translator,
    )
    lineage = [c for c in ("keyword_id", "topic") if c in questions.columns]
    translations = out.rename({"source_id": "question_id"}).with_columns(
        pl.struct("text", "language", "question_id").map_elements(
            lambda r: content_id("translation", r["text"] or "", r["language"], r["question_id"]), return_dtype=pl.String
        ).alias("translation_id")
    )
    table = conform(translations, Translation)
    if lineage:
        # Extra columns downstream stages may ignore; they make per-topic reports possible.
        table = table.join(questions.select("question_id", *lineage), on="question_id", how="left", maintain_order="left")
    report: dict[str, Any] = {
        "by_language_status": {
            f"{lang}/{status}": n
            for lang, status, n in table.group_by("language", "status").len().sort("language", "status").iter_rows()
        },
        "attempts": {str(a): n for a, n in table.group_by("attempts").len().sort("attempts").iter_rows()},
        "problem_examples": {
            reason: examples
            for reason, examples in table.filter(pl.col("status") != "ok")
            .with_columns(pl.col("error").str.extract(r"after \d+ attempts: ([a-z ]+)").alias("reason"))
            .group_by("reason", maintain_order=True)
            .agg(pl.concat_str(pl.col("language"), pl.lit(": "), pl.col("error")).head(3))
            .iter_rows()
        },
    }
    if llm_translator is not None and llm_translator.results:

        report["llm_usage"] = usage_summary(pl.concat(llm_translator.results, how="diagonal_relaxed"), "translate", prices or {})
    return StageOutput(tables={"translations": table}, report=report)


def _translate_files(settings: TranslateStageConfig) -> list[Path]:
    config = settings.translate
    files = [template_path(config.template), model_file(config.langid_model_path)]
    if (model := resolve_faithfulness_model(config.faithfulness_model)) is not None:
        files.append(resolve_model(model, hint=FAITHFULNESS_HINT, setting="faithfulness_model").path)
    return files


STAGE = Stage(
    name="translate", run=translate_stage, config=TranslateConfig,
    summary="Translate the questions into every configured language, verifying language (fastText) and faithfulness.",
    reads={"questions": reads(QUESTIONS)}, writes=(TRANSLATIONS,),
    settings=lambda cfg, section: TranslateStageConfig(translate=section, languages=cfg.languages, llm=cfg.llm),
    depends_on=_translate_files, uses_llm=True, shard_by="questions",
    progress_total=lambda inputs, settings: row_count(inputs["questions"]) * len(settings.target_languages),
    report_keys=("by_language_status",),
)
