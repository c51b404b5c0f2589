"""Settings for releases, from `[stages.release]` in curate.toml (see docs/release.md)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.review.config import DecisionRule

OutputFormat = Literal["messages", "reasoning", "prompt_response"]
OUTPUT_FORMATS: tuple[str, ...] = ("messages", "reasoning", "prompt_response")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MixSource(_Section):
    """An external dataset added to a release (e.g. a safety / non-compliance set)."""

    name: str = Field(description="Recorded in each mixed row's `source` column and in the manifest.")
    path: str | None = Field(default=None, description="A .jsonl/.json/.parquet file or a folder of them, in messages format.")
    table: str | None = Field(
        default=None, description="A workspace table of answered rows instead of a file: 'safety_filter/selected' "
        "(docs/safety.md). Rows get source '<name>/<subset>'.")
    ratio: float | None = Field(default=None, gt=0, description="Mixed rows per curated row (0.5 = half as many).")
    count: int | None = Field(default=None, ge=1, description="Exact number of rows to add.")
    seed: int = 0
    messages_field: str = "messages"
    language: str = Field(default="en", description="Language when the source rows have no `language` column.")
    language_field: str = "language"
    topic: str | None = Field(default=None, description="Topic given to every mixed row, e.g. 'safety'.")
    filter_field: str | None = Field(default=None, description="Keep only rows whose field is in filter_values.")
    filter_values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_amount(self) -> MixSource:
        if (self.ratio is None) == (self.count is None):
            raise ValueError(f"mix '{self.name}': set exactly one of ratio or count")
        if (self.path is None) == (self.table is None):
            raise ValueError(f"mix '{self.name}': set exactly one of path or table")
        return self


class CardConfig(_Section):
    """What the Hugging Face dataset card says about the release."""

    pretty_name: str = "curate blocked-topic SFT"
    license: str = "other"
    task_categories: list[str] = Field(default_factory=lambda: ["text-generation"])
    tags: list[str] = Field(default_factory=lambda: ["sft", "reasoning", "multilingual"])
    description: str = (
        "Multilingual supervised fine-tuning examples for prompts that models commonly refuse, "
        "with reasoning traces, reviewed by human annotators."
    )


class ReleaseConfig(_Section):
    store: str | None = Field(
        default=None,
        description="Release store URI: a local folder or s3://bucket/prefix (default: <workspace>/releases).",
    )
    include_pending: bool = Field(
        default=False,
        description="Draft mode: also release candidates still pending review (tagged 'draft', never 'published').",
    )
    campaigns: list[str] = Field(
        default_factory=list, description="Only use reviews from these campaigns (default: all)."
    )
    test_fraction: float = Field(
        default=0.1, ge=0, lt=1,
        description="Share of questions held out as the `test` split for evaluation (exports leave it out).",
    )
    split_seed: int = 0
    format: OutputFormat = "messages"
    think_open: str = "<think>\n"
    think_close: str = "\n</think>\n\n"
    mix: list[MixSource] = Field(default_factory=list)
    shard_rows: int = Field(default=50_000, ge=1, description="Rows per Parquet shard in exports.")
    card: CardConfig = Field(default_factory=CardConfig)
    hf_token_env: str = Field(default="HF_TOKEN", description="Environment variable holding the Hub token.")

    @model_validator(mode="before")
    @classmethod
    def _no_rule_of_its_own(cls, data: Any) -> Any:
        moved = [k for k in ("policy", "min_submitted") if isinstance(data, dict) and k in data]
        if moved:
            raise ValueError(
                f"{', '.join(moved)}: a release keeps rows by the one review rule, set in [stages.review] policy "
                "and the review settings file's min_submitted ([argilla] min_submitted overrides it); "
                "remove it from [stages.release]"
            )
        return data

    @model_validator(mode="after")
    def _unique_mix_names(self) -> ReleaseConfig:
        names = [m.name for m in self.mix]
        if len(names) != len(set(names)) or "curate" in names:
            raise ValueError("mix names must be unique and must not be 'curate'")
        return self


class ReleaseBuild(_Section):
    """What the release stage's rows depend on: the release settings and the review rule (both
    enter the stage fingerprint, so changing either rebuilds the rows)."""

    release: ReleaseConfig = Field(default_factory=ReleaseConfig)
    rule: DecisionRule = Field(default_factory=DecisionRule)
