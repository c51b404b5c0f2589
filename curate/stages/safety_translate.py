"""Optional translation of safety prompts into the configured languages (off by default).

MAI-DS-R1's safety set was not translated, so `languages` is empty by default and the stage passes
the prompts through unchanged without an LLM call. With languages set, every turn of each prompt's
conversation is translated with the translate template (`curate/prompts/translate.j2`) through the
LLM layer; the original prompt is kept too (`keep_source`). A failed translation is a row with
status error (a rerun retries it) that the answers stage skips; subset, category and the expected
behaviour carry over unchanged.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate.config import EndpointConfig, with_endpoint_defaults
from curate.ids import content_id
from curate.llm import complete_frame, usage_summary
from curate.progress import Advance
from curate.prompts import render_prompt, template_path
from curate.stages.declaration import Stage, reads
from curate.tables import SAFETY_PROMPTS, SAFETY_TRANSLATED
from curate.text.languages import check_language_codes, language_name
from curate.workspace import StageOutput

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})


class SafetyTranslateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    languages: list[str] = Field(default_factory=list, description="Target languages; empty (default): no translation.")
    keep_source: bool = Field(default=True, description="Keep the untranslated prompts too.")
    translator: EndpointConfig = Field(default_factory=EndpointConfig)
    template: str = "translate.j2"
    overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0})

    _codes = field_validator("languages")(check_language_codes)


def _with_status(prompts: pl.DataFrame) -> pl.DataFrame:
    return prompts.with_columns(pl.lit("ok").alias("status"), pl.lit(None, pl.String).alias("error"))


def safety_translate_stage(
    prompts: pl.DataFrame, config: SafetyTranslateConfig, *, cache=None, refresh: bool = False,
    progress: Advance | None = None,
) -> StageOutput:
    if not config.languages:
        return StageOutput(tables={"prompts": _with_status(prompts)}, report={"translated": 0})
    jobs, turns = [], []
    for row in prompts.iter_rows(named=True):
        for lang in config.languages:
            if lang == row["language"]:
                continue
            jobs.append((row, lang))
            for i, turn in enumerate(row["messages"]):
                turns.append({
                    "request_id": content_id("strans", turn["content"], row["prompt_id"], lang, i),
                    "prompt": render_prompt(config.template, text=turn["content"],
                                            source_language=language_name(row["language"]),
                                            target_language=language_name(lang), target_code=lang),
                })
    results = complete_frame(pl.DataFrame(turns, schema={"request_id": pl.String, "prompt": pl.String}),
                             config.translator, stage="safety_translate", cache=cache, refresh=refresh,
                             overrides=config.overrides, progress=progress)
    by_id = {r["request_id"]: r for r in results.iter_rows(named=True)}
    rows = []
    for row, lang in jobs:
        messages, errors = [], []
        for i, turn in enumerate(row["messages"]):
            done = by_id[content_id("strans", turn["content"], row["prompt_id"], lang, i)]
            if done["status"] != "ok" or done["finish_reason"] == "length" or not (done["content"] or "").strip():
                errors.append(f"turn {i + 1}: {done['error'] or 'truncated or empty translation'}")
            messages.append({"role": turn["role"], "content": (done["content"] or "").strip()})
        rows.append(row | {
            "prompt_id": content_id("safety", messages[-1]["content"], row["prompt_id"], lang),
            "language": lang, "prompt": messages[-1]["content"], "messages": messages,
            "status": "error" if errors else "ok", "error": "; ".join(errors) or None,
        })
    translated = pl.DataFrame(rows, schema=prompts.schema | {"status": pl.String, "error": pl.String})
    out = pl.concat([_with_status(prompts), translated]) if config.keep_source else translated
    report = {"translated": int((translated["status"] == "ok").sum()), "errors": int((translated["status"] != "ok").sum()),
              "llm": usage_summary(results, "safety_translate")}
    return StageOutput(tables={"prompts": out}, report=report)


STAGE = Stage(
    name="safety_translate", run=safety_translate_stage, config=SafetyTranslateConfig,
    summary="Optionally translate safety prompts into `languages` (off by default: prompts pass through).",
    reads={"prompts": reads(SAFETY_PROMPTS)}, writes=(SAFETY_TRANSLATED,),
    fill=lambda cfg, raw: with_endpoint_defaults(cfg.llm, raw, "translator"),
    uses_llm=lambda settings: bool(settings.languages),
    depends_on=lambda settings: [template_path(settings.template)] if settings.languages else [],
    progress_total=lambda inputs, settings: None,
)
