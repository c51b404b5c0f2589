"""Safety prompts: the prompts whose answers teach the model when to decline and when to help.

Each configured source is one subset (its `name`): a subset of the Tulu 3 SFT mixture by its
`source` value on the Hub (the safety half of MAI-DS-R1's data), or a local file in any format
curate/rowfiles.py reads. Every prompt keeps its subset, its category and the expected behaviour:

    harmful  the answer must decline, explain why and offer a safe alternative
    benign   the prompt only looks sensitive: the answer must help (a refusal is an over-refusal)

The expectation comes from the source's `category_rules` (category value -> harmful/benign), else
its `expect`, else it is **harmful**: a prompt nobody classified is treated as a request to decline
(the safe side). `expected_rule` records which rule decided.

A conversation (a `messages` field) is kept as a list of turns: the turns up to the last user turn
are the context sent to the generator, the last user turn is the prompt answered; any assistant turn
after it (the source's own answer) is dropped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.errors import ConfigError, InputError
from curate.ids import content_id
from curate.rowfiles import Row, read_rows
from curate.stages.declaration import Stage
from curate.tables import SAFETY_PROMPTS

Expectation = Literal["harmful", "benign"]
TULU_MIXTURE = "allenai/tulu-3-sft-mixture"
# The Tulu 3 SFT mixture's safety subsets, by their `source` value (see docs/safety.md).
TULU_SAFETY_SUBSETS = {
    "coconot": "ai2-adapt-dev/coconot_converted",
    "wildjailbreak": "ai2-adapt-dev/tulu_v3.9_wildjailbreak_decontaminated_50k",
    "wildguardmix": "ai2-adapt-dev/tulu_v3.9_synthetic_finalresp_wildguardmixtrain_decontaminated_50k",
}
ROLES = ("system", "user", "assistant")
MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
PROMPT_SCHEMA = {
    "prompt_id": pl.String, "subset": pl.String, "origin": pl.String, "source_line": pl.Int64, "source_id": pl.String,
    "category": pl.String, "expected": pl.String, "expected_rule": pl.String, "language": pl.String,
    "prompt": pl.String, "messages": pl.List(MESSAGE), "turns": pl.Int64,
}


class SafetySource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The subset name kept on every prompt and in release lineage, e.g. 'xstest'.")
    path: str | None = Field(default=None, description="A local file (.jsonl .json .csv .tsv .parquet .txt or a datasets folder).")
    hub_subset: str | None = Field(default=None, description=f"A `source` value of {TULU_MIXTURE}, e.g. {TULU_SAFETY_SUBSETS['coconot']}.")
    hub_dataset: str = Field(default=TULU_MIXTURE, description="The Hub dataset that holds hub_subset.")
    hub_split: str = "train"
    text_field: str = Field(default="prompt", description="The prompt column (ignored when the row has messages).")
    messages_field: str = Field(default="messages", description="A list of {role, content} turns, used when present.")
    category_field: str | None = Field(default="category", description="The column that classifies a prompt.")
    id_field: str | None = Field(default="id", description="The source's own id column, kept as source_id.")
    language_field: str = "language"
    language: str = Field(default="en", description="Language of rows without a language column.")
    expect: Expectation | None = Field(default=None, description="The expected behaviour for the whole source.")
    category_rules: dict[str, Expectation] = Field(default_factory=dict, description="Value of rule_field -> harmful/benign.")
    rule_field: str | None = Field(default=None, description="The column category_rules read (default: category_field).")
    filter_field: str | None = Field(default=None, description="Keep only rows whose field is in filter_values.")
    filter_values: list[str] = Field(default_factory=list)
    limit: int | None = Field(default=None, ge=1, description="Keep the first `limit` prompts of this source.")

    @model_validator(mode="after")
    def _one_origin(self) -> SafetySource:
        if (self.path is None) == (self.hub_subset is None):
            raise ValueError(f"safety source '{self.name}': set exactly one of path or hub_subset")
        return self


class SafetyPromptsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[SafetySource] = Field(default_factory=list, description="The subsets to read (see docs/safety.md).")

    @model_validator(mode="after")
    def _unique_names(self) -> SafetyPromptsConfig:
        names = [s.name for s in self.sources]
        if len(names) != len(set(names)):
            raise ValueError(f"safety source names must be unique: {names}")
        return self


def load_hub_subset(source: SafetySource) -> list[Row]:
    """Rows of one Tulu mixture subset, numbered by their row in the subset. Needs the Hub."""
    import datasets  # heavy import (pyarrow, fsspec): only when a Hub source is configured

    try:
        mixture = datasets.load_dataset(source.hub_dataset, split=source.hub_split)
    except Exception as exc:  # offline, gated, renamed: all the same to the user
        raise InputError(
            f"hf://datasets/{source.hub_dataset}", f"could not load from the Hub ({type(exc).__name__}: {exc}); "
            "save the subset to a local file and set `path` instead", field="hub_subset",
        ) from exc
    subset = mixture.filter(lambda row: row["source"] == source.hub_subset)
    return list(enumerate(subset, start=1))


def _conversation(row: dict[str, Any], source: SafetySource, origin: str, line: int) -> list[dict[str, str]]:
    messages = row.get(source.messages_field)
    if messages is None:
        text = row.get(source.text_field)
        if not isinstance(text, str) or not text.strip():
            raise InputError(origin, "no prompt: empty or not text (and no messages)", line=line, field=source.text_field)
        return [{"role": "user", "content": text.strip()}]
    if not isinstance(messages, list) or not messages:
        raise InputError(origin, "expected a non-empty list of {role, content} turns", line=line, field=source.messages_field)
    turns = []
    for i, turn in enumerate(messages):
        if not isinstance(turn, dict) or turn.get("role") not in ROLES or not isinstance(turn.get("content"), str):
            raise InputError(origin, f"turn {i + 1} is not a {{role: system|user|assistant, content: text}}", line=line,
                             field=source.messages_field)
        turns.append({"role": turn["role"], "content": turn["content"]})
    last_user = max((i for i, t in enumerate(turns) if t["role"] == "user"), default=None)
    if last_user is None or not turns[last_user]["content"].strip():
        raise InputError(origin, "no user turn to answer", line=line, field=source.messages_field)
    # The source's own answer (anything after the last user turn) is what we replace.
    return turns[: last_user + 1]


def expectation(label: str | None, source: SafetySource) -> tuple[Expectation, str]:
    """(expected behaviour, the rule that decided it) for a prompt whose rule field holds `label`;
    see the module docstring."""
    if label is not None and label in source.category_rules:
        return source.category_rules[label], f"category_rules[{label}]"
    if source.expect is not None:
        return source.expect, "source.expect"
    return "harmful", "default_harmful"


def prompts_from_source(source: SafetySource) -> list[dict[str, Any]]:
    if source.path is not None:
        origin = str(Path(source.path).expanduser())
        rows = read_rows(Path(origin))
    else:
        origin = f"hf://datasets/{source.hub_dataset}:{source.hub_subset}"
        rows = iter(load_hub_subset(source))
    out: list[dict[str, Any]] = []
    for line, row in rows:
        if source.filter_field and str(row.get(source.filter_field)) not in source.filter_values:
            continue
        turns = _conversation(row, source, origin, line)
        raw_category = row.get(source.category_field) if source.category_field else None
        category = str(raw_category).strip() if raw_category not in (None, "") else None
        label = row.get(source.rule_field) if source.rule_field else raw_category
        expected, rule = expectation(None if label in (None, "") else str(label).strip(), source)
        raw_id = row.get(source.id_field) if source.id_field else None
        prompt = turns[-1]["content"].strip()
        out.append({
            "prompt_id": content_id("safety", prompt, source.name, json.dumps(turns[:-1], ensure_ascii=False)),
            "subset": source.name, "origin": origin, "source_line": line,
            "source_id": None if raw_id in (None, "") else str(raw_id), "category": category,
            "expected": expected, "expected_rule": rule,
            "language": str(row.get(source.language_field) or source.language),
            "prompt": prompt, "messages": turns, "turns": sum(t["role"] == "user" for t in turns),
        })
        if source.limit is not None and len(out) >= source.limit:
            break
    if not out:
        raise InputError(origin, f"safety source '{source.name}' has no prompts (after its filter)")
    return out


def safety_prompts_stage(config: SafetyPromptsConfig) -> dict[str, pl.DataFrame]:
    if not config.sources:
        raise ConfigError("no safety sources: set [[stages.safety_prompts.sources]] in curate.toml (see docs/safety.md)")
    rows = [row for source in config.sources for row in prompts_from_source(source)]
    frame = pl.DataFrame(rows, schema=PROMPT_SCHEMA)
    return {"prompts": frame.unique("prompt_id", keep="first", maintain_order=True)}


STAGE = Stage(
    name="safety_prompts", run=safety_prompts_stage, config=SafetyPromptsConfig,
    summary="Read safety prompts (Tulu 3 safety subsets or local files) with subset, category and expected behaviour.",
    writes=(SAFETY_PROMPTS,),
    depends_on=lambda settings: [s.path for s in settings.sources if s.path is not None],
)
