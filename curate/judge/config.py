"""`[stages.judge]`: one section for both judge stages.

`judge_score` (per candidate, sharded) takes the scoring part (`ScoringConfig`); `judge` (best of
K, preference pairs, report) takes all of it (`JudgeConfig`). Splitting the settings keeps the
scoring's fingerprint, and so its shards and LLM calls, unchanged when only the choosing
settings (best_of, preference) change.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curate.config import Config, EndpointConfig, LangIdConfig
from curate.judge.bestof import BestOfConfig, PreferenceConfig
from curate.judge.rubrics import HARM_TEMPLATE, SATISFACTION_TEMPLATE, rubric_version
from curate.refusal import RefusalConfig


class NamedJudge(EndpointConfig):
    """A judge endpoint; unset fields come from `[llm]`."""

    name: str = Field(default="default", pattern=r"^[A-Za-z0-9_.-]+$", description="Shown as the suggestion's agent.")


class ScoringConfig(BaseModel):
    """What scores one candidate: the judges, their rubrics, the refusal detector and the signals."""

    model_config = ConfigDict(extra="forbid")

    judges: list[NamedJudge] = Field(default_factory=lambda: [NamedJudge()], min_length=1)
    satisfaction_template: str = SATISFACTION_TEMPLATE
    harm_template: str = HARM_TEMPLATE
    harm: bool = Field(default=True, description="Run the HarmBench harm classifier.")
    harm_language_rule: Literal["any", "harmbench"] = Field(
        default="any", description="'harmbench' keeps HarmBench's English-only rule; 'any' judges every language.")
    overrides: dict[str, Any] = Field(default_factory=lambda: {"temperature": 0.0, "max_tokens": 256})
    max_answer_chars: int = Field(default=6000, ge=200, description="Longer answers reach the judges as head and tail.")
    refusal: RefusalConfig = Field(default_factory=lambda: RefusalConfig(mode="rules+llm"))
    langid: LangIdConfig = Field(default_factory=LangIdConfig)
    language_check_min_chars: int = Field(default=20, ge=1)
    language_aliases: dict[str, list[str]] = Field(default_factory=lambda: {"zh": ["wuu", "yue"]})
    repetition_ngram: int = Field(default=5, ge=2)

    @field_validator("judges")
    @classmethod
    def _unique_names(cls, judges: list[NamedJudge]) -> list[NamedJudge]:
        # The name keys a judge's rows in judge/scores and its Argilla suggestions.
        if len({j.name for j in judges}) < len(judges):
            raise ValueError(f"judge names must be unique, got {[j.name for j in judges]}")
        return judges

    def agents(self) -> dict[str, str]:
        """judge name -> `model@rubric` agent label (what Argilla shows beside a suggestion)."""
        return {j.name: f"{j.name}:{j.model}" for j in self.judges}

    def rubric_versions(self) -> str:
        """The judges' rubric versions, as the judgments' `rubrics` column holds them."""
        return ", ".join(sorted({rubric_version(self.satisfaction_template),
                                 *([rubric_version(self.harm_template)] if self.harm else [])}))


class JudgeConfig(ScoringConfig):
    """The whole `[stages.judge]` section: the scoring settings plus best of K and preference pairs."""

    best_of: BestOfConfig = Field(default_factory=BestOfConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)

    def scoring(self) -> ScoringConfig:
        return ScoringConfig.model_validate({name: getattr(self, name) for name in ScoringConfig.model_fields})


def with_judge_defaults(cfg: Config, raw: dict[str, Any]) -> dict[str, Any]:
    """Each judge's unset endpoint fields from `[llm]` (one judge, named "default", when none is
    listed), and the language-ID model from `[langid]`."""
    raw = dict(raw)
    base = cfg.llm.model_dump()
    raw["judges"] = [base | dict(j) for j in (raw.get("judges") or [{"name": "default"}])]
    raw.setdefault("langid", cfg.langid.model_dump())
    return raw
