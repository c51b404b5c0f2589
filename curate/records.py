"""Typed records for every stage.

Each record is a pydantic model (validation, JSON Schema) and a polars schema derived from it
(the columns a stage table must have). Bump SCHEMA_VERSION when a field changes meaning;
`curate schemas` rewrites the JSON Schemas under `schemas/`.
"""

from __future__ import annotations

import datetime as dt
import json
import types
import typing
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

Status = Literal["ok", "error", "rejected", "flagged"]


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Seed(Record):
    """A prompt a model may have blocked, as read from the user's files."""

    seed_id: str = Field(description="Content hash of the normalized text (the source's own id is `source_id`).")
    text: str
    language: str = Field(description="ISO 639-1 code; detected with fastText when the source has none.")
    language_confidence: float | None = None
    source: str = Field(description="File the seed came from.")
    source_line: int = Field(description="1-based line (or row) in the source file.")
    source_id: str | None = Field(default=None, description="The source's own id column, if any.")
    topic: str | None = None
    blocked: bool | None = Field(default=None, description="Whether the target model refused it; None until detected.")


class BlockedProbe(Record):
    """One target-model response to a seed, with the refusal detector's verdict."""

    seed_id: str
    model: str
    response: str | None
    refused: bool | None
    refusal_kind: str | None = Field(default=None, description="hard, deflection, official_line or None.")
    detector: str
    status: Status
    error: str | None = None


class Keyword(Record):
    keyword_id: str
    keyword: str
    language: str
    count: int
    score: float
    seed_ids: list[str]
    topic: str | None = None


class Question(Record):
    question_id: str = Field(description="Hash of the text and the keyword id.")
    keyword_id: str
    keyword: str
    text: str
    language: str
    style: str | None = Field(default=None, description="factual, historical, explanatory, perspectives, ...")
    topic: str | None = None
    status: Status = "ok"
    error: str | None = None


class Translation(Record):
    translation_id: str = Field(description="Hash of the text, the language and the source question id.")
    question_id: str
    source_language: str
    language: str
    text: str | None
    detected_language: str | None = None
    language_confidence: float | None = None
    faithfulness: float | None = Field(default=None, description="Cross-lingual cosine to the source, if measured.")
    attempts: int = 1
    status: Status = "ok"
    error: str | None = None


class Candidate(Record):
    """One sampled answer with its chain of thought."""

    candidate_id: str = Field(description="Hash of prompt, model and candidate index, under the translation id.")
    translation_id: str
    question_id: str
    language: str
    prompt: str
    candidate_index: int
    model: str
    reasoning: str | None
    answer: str | None
    finish_reason: str | None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    status: Status = "ok"
    reject_reason: str | None = None
    error: str | None = None


class ReviewItem(Record):
    """One annotator's submitted response to one candidate in Argilla."""

    review_id: str
    candidate_id: str
    campaign: str
    annotator: str
    accept: bool | None
    satisfaction: int | None = Field(default=None, ge=0, le=4)
    harmful: bool | None = None
    corrected_answer: str | None = None
    comment: str | None = None
    status: str = Field(default="submitted", description="Argilla response status: submitted, discarded, draft.")
    submitted_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    answer_version: str | None = Field(
        default=None, description="Hash of the reasoning and answer the reviewer saw (curate.review.identity)."
    )


class ReleaseRow(Record):
    """One training example in a release, with lineage back to the seed."""

    row_id: str
    prompt: str
    language: str
    topic: str | None
    reasoning: str | None
    answer: str
    answer_corrected: bool = False
    reasoning_matches_answer: bool = Field(
        default=True, description="False when a reviewer's correction replaced the answer the reasoning led to."
    )
    n_reviews: int = 0
    accept_votes: int = 0
    satisfaction_mean: float | None = None
    harmful_votes: int = 0
    source: str = Field(default="curate", description="'curate' or the name of a mixed-in dataset.")
    context: str | None = Field(
        default=None, description="Earlier turns of a multi-turn conversation, as a JSON list of {role, content}; "
        "the prompt is the last user turn.")
    seed_ids: list[str] | None = None
    keyword_id: str | None = None
    question_id: str | None = None
    translation_id: str | None = None
    candidate_id: str | None = None
    split: str | None = Field(
        default=None, description="'train' or 'test' (held out for evaluation, by question); null in old releases."
    )


RECORDS: dict[str, type[Record]] = {
    "seed": Seed,
    "blocked_probe": BlockedProbe,
    "keyword": Keyword,
    "question": Question,
    "translation": Translation,
    "candidate": Candidate,
    "review_item": ReviewItem,
    "release_row": ReleaseRow,
}

_SCALARS: dict[object, pl.DataType] = {
    str: pl.String(),
    int: pl.Int64(),
    float: pl.Float64(),
    bool: pl.Boolean(),
    dt.datetime: pl.Datetime("us", "UTC"),
}


def _polars_dtype(annotation: object) -> pl.DataType:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _polars_dtype(args[0])
    if origin is list:
        return pl.List(_polars_dtype(typing.get_args(annotation)[0]))
    if origin is Literal:
        return pl.String()
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    raise TypeError(f"no polars dtype for {annotation!r}")


def polars_schema(model: type[Record]) -> pl.Schema:
    hints = typing.get_type_hints(model)
    return pl.Schema({name: _polars_dtype(hints[name]) for name in model.model_fields})


def empty_frame(model: type[Record]) -> pl.DataFrame:
    return pl.DataFrame(schema=polars_schema(model))


def conform(df: pl.DataFrame, model: type[Record]) -> pl.DataFrame:
    """Select and cast to the record's columns, adding missing optional ones as nulls.

    Extra columns are dropped; a missing required column is a bug in the stage, so it raises.
    """
    schema = polars_schema(model)
    exprs = []
    for name, dtype in schema.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype))
        elif not model.model_fields[name].is_required():
            default = model.model_fields[name].default
            exprs.append(pl.lit(default, dtype=dtype).alias(name))
        else:
            raise ValueError(f"{model.__name__} table lacks required column '{name}'")
    return df.select(exprs)


def json_schema(model: type[Record]) -> dict:
    schema = model.model_json_schema()
    name = next(k for k, v in RECORDS.items() if v is model)
    schema["$id"] = f"https://curate.dev/schemas/{name}.v{SCHEMA_VERSION}.json"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["x-schema-version"] = SCHEMA_VERSION
    return schema


def write_json_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in RECORDS.items():
        path = directory / f"{name}.v{SCHEMA_VERSION}.json"
        path.write_text(json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
