"""Argilla dataset settings for a review campaign, read from a TOML file (annotations/review.toml).

The file names the fields (and which candidate column fills each), the questions, the metadata
properties, the guidelines (a Markdown file beside it) and the task distribution. Pull reads the
answers back by question name, so the questions it relies on are checked here.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from curate.errors import InputError

DEFAULT_SETTINGS_FILE = Path("annotations") / "review.toml"
# Where the file lives in a source checkout, for runs started outside the repository.
BUNDLED_SETTINGS_FILE = Path(__file__).resolve().parents[2] / "annotations" / "review.toml"

# What pull expects: question name -> (type, label values it maps to booleans).
REQUIRED_QUESTIONS: dict[str, tuple[str, set[str] | None]] = {
    "accept": ("label", {"accept", "reject"}),
    "satisfaction": ("rating", None),
    "harmful": ("label", {"yes", "no"}),
    "corrected_answer": ("text", None),
    "comment": ("text", None),
}


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldSpec(_Spec):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    source: str = Field(description="Column of the candidate table that fills this field.")
    required: bool = False
    use_markdown: bool = False


class QuestionSpec(_Spec):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    type: Literal["label", "rating", "text"]
    title: str
    description: str | None = None
    required: bool = True
    labels: dict[str, str] | None = Field(default=None, description="label value -> text shown (label questions).")
    values: list[int] | None = Field(default=None, description="Allowed ratings (rating questions).")
    use_markdown: bool = False

    @model_validator(mode="after")
    def _options_match_type(self) -> QuestionSpec:
        if self.type == "label" and not self.labels:
            raise ValueError("a label question needs `labels`")
        if self.type == "rating" and not self.values:
            raise ValueError("a rating question needs `values`")
        if self.type == "rating" and any(not 0 <= v <= 10 for v in self.values or []):
            raise ValueError("rating values must be between 0 and 10")
        return self


class MetadataSpec(_Spec):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    title: str
    source: str
    visible_for_annotators: bool = True


class ReviewSettings(_Spec):
    guidelines: str = Field(description="Markdown text (the file's `guidelines` path is read when loading).")
    min_submitted: int = Field(default=1, ge=1)
    fields: list[FieldSpec]
    questions: list[QuestionSpec]
    metadata: list[MetadataSpec] = Field(default_factory=list)

    def structure_hash(self) -> str:
        """Hash of what a published Argilla dataset cannot change: fields, questions, metadata."""
        shape = self.model_dump(include={"fields", "questions", "metadata"}, mode="json")
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]

    # -- REST payloads (Argilla API v1) ----------------------------------------------------
    def field_payloads(self) -> list[dict]:
        return [
            {"name": f.name, "title": f.title, "required": f.required,
             "settings": {"type": "text", "use_markdown": f.use_markdown}}
            for f in self.fields
        ]

    def question_payloads(self) -> list[dict]:
        payloads = []
        for q in self.questions:
            if q.type == "label":
                settings = {"type": "label_selection",
                            "options": [{"value": v, "text": t} for v, t in (q.labels or {}).items()]}
            elif q.type == "rating":
                settings = {"type": "rating", "options": [{"value": v} for v in q.values or []]}
            else:
                settings = {"type": "text", "use_markdown": q.use_markdown}
            payloads.append({"name": q.name, "title": q.title, "description": q.description,
                             "required": q.required, "settings": settings})
        return payloads

    def metadata_payloads(self) -> list[dict]:
        return [
            {"name": m.name, "title": m.title, "visible_for_annotators": m.visible_for_annotators,
             "settings": {"type": "terms"}}
            for m in self.metadata
        ]


def _check_questions(settings: ReviewSettings, path: Path) -> None:
    by_name = {q.name: q for q in settings.questions}
    for name, (kind, labels) in REQUIRED_QUESTIONS.items():
        question = by_name.get(name)
        if question is None:
            raise InputError(path, f"question '{name}' is required (pull reads it back)", field="questions")
        if question.type != kind:
            raise InputError(path, f"question '{name}' must be of type '{kind}'", field=f"questions.{name}.type")
        if labels is not None and set(question.labels or {}) != labels:
            raise InputError(path, f"question '{name}' must have the labels {sorted(labels)}", field=f"questions.{name}.labels")
    # The argilla SDK keeps fields, questions and metadata in one name table; a shared name breaks it.
    names = [s.name for s in [*settings.fields, *settings.questions, *settings.metadata]]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise InputError(path, f"field, question and metadata names must all differ; repeated: {dup}", field="fields")


def resolve_settings_path(path: str | Path | None) -> Path:
    candidate = Path(path) if path else DEFAULT_SETTINGS_FILE
    if candidate.exists() or path:
        return candidate
    return BUNDLED_SETTINGS_FILE


def load_review_settings(path: str | Path | None = None) -> ReviewSettings:
    """Read and validate the settings file; errors name the file and the setting."""
    file = resolve_settings_path(path)
    if not file.exists():
        raise InputError(file, "review settings file not found")
    try:
        tree = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(file, f"not valid TOML: {exc}") from exc
    guidelines_ref = tree.get("guidelines")
    if not isinstance(guidelines_ref, str):
        raise InputError(file, "must name a Markdown file", field="guidelines")
    guidelines_file = file.parent / guidelines_ref
    if not guidelines_file.exists():
        raise InputError(file, f"guidelines file {guidelines_file} not found", field="guidelines")
    tree["guidelines"] = guidelines_file.read_text(encoding="utf-8")
    try:
        settings = ReviewSettings.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputError(file, err["msg"], field=loc) from exc
    _check_questions(settings, file)
    return settings
