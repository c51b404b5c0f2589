"""The refusal detector's one configuration, shared by every caller (blocked, answers, eval, CLI)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

KINDS = ("hard", "deflection", "official_line")
# What the model predicts: "answered" plus the three refusal kinds.
CLASSES = ("answered", *KINDS)
OUTPUT_COLUMNS = ("refused", "refusal_kind", "refusal_score", "detector", "judge_error")
Mode = Literal["model", "rules", "llm", "model+llm", "rules+llm"]


class RefusalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field(default="model", description="model (trained fastText, default) | rules | llm | model+llm | rules+llm.")
    model_path: str | None = Field(
        default=None, description="Trained detector (.ftz with its .json card); default: the one shipped in curate/refusal/artefact/."
    )
    rules_path: str | None = Field(default=None, description="Pattern file; default: the bundled refusal_rules.toml.")
    threshold: float = Field(default=0.5, ge=0, le=1, description="refused = refusal_score >= threshold.")
    lead_chars: int = Field(default=200, ge=1, description="A refusal phrase within this many leading characters counts as 'at the start'.")
    short_units: int = Field(default=400, ge=1, description="Replies up to this length are short (CJK characters count 3).")
    long_units: int = Field(default=1500, ge=1, description="Replies longer than this are long: phrases inside them weigh little.")
    uncertain_low: float = Field(default=0.15, ge=0, le=1, description="Cascades: scores in [low, high] go to the judge.")
    uncertain_high: float = Field(default=0.85, ge=0, le=1)
    judge_template: str = Field(default="refusal_judge.j2", description="Bundled template name or a path.")
    judge_max_chars: int = Field(default=3000, ge=200, description="Longer replies are shown to the judge as head and tail.")
    judge_overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 64})

    @property
    def uses_llm(self) -> bool:
        return "llm" in self.mode


def with_refusal_defaults(stages: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    """A stage's settings with its `refusal` table filled from `[stages.refusal]`: one detector and
    one config for every caller; the stage's own keys win."""
    return raw | {"refusal": dict(stages.get("refusal", {})) | dict(raw.get("refusal") or {})}
