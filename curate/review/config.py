"""`[stages.review]`: which campaign, settings file, conflict policy and push tuning, and the one
rule that decides when a candidate counts as accepted.

The rule (`DecisionRule`) is what push sends as Argilla's task distribution, what pull resolves
decisions with and what a release keeps rows by; all three get it from `decision_rule(cfg)`:
- policy: `[stages.review] policy`;
- min_submitted: an explicit `[argilla] min_submitted` (file or env), else the settings file's
  `min_submitted` (annotations/review.toml).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from curate.config import ArgillaConfig, Config, stage_config
from curate.review.policy import ConflictPolicy
from curate.review.routing import RoutingConfig
from curate.review.settings import load_review_settings
from curate.tables import CANDIDATES


class ReviewConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(default="review", min_length=1, max_length=200,
                          description="Argilla dataset name; one dataset per review campaign.")
    settings: str | None = Field(default=None, description="Settings TOML; default annotations/review.toml.")
    source: str = Field(default=str(CANDIDATES), description="Candidate table to push (stage/table).")
    run: str | None = Field(default=None, description="'run' metadata on new records; default: the source stage's run id.")
    policy: ConflictPolicy = "majority"
    batch_size: int = Field(default=250, ge=1, le=500)
    max_retries: int = Field(default=5, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)
    full_pull_every: int = Field(default=10, ge=1, description="Every Nth pull downloads all reviewed records "
                                 "(catches answer edits an incremental pull can miss; 1 = always full).")
    routing: RoutingConfig = Field(default_factory=RoutingConfig, description="Which judged candidates people see (docs/judge.md).")
    safety_campaign: str = Field(default="safety-review", min_length=1, max_length=200,
                                 description="Argilla dataset for the safety filter's review rows (`--safety`, docs/safety.md).")


class DecisionRule(BaseModel):
    """When a candidate is accepted: its conflict policy and how many submitted responses it needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: ConflictPolicy = "majority"
    min_submitted: int = Field(default=1, ge=1)


def effective_min_submitted(argilla: ArgillaConfig, settings_default: int) -> int:
    """An explicit `[argilla] min_submitted` (file or env) wins over the settings file's default."""
    return argilla.min_submitted if "min_submitted" in argilla.model_fields_set else settings_default


def decision_rule(cfg: Config, review_cfg: ReviewConfig | None = None) -> DecisionRule:
    """The rule push, pull and release all use (see the module docstring)."""
    review_cfg = review_cfg or stage_config(cfg, "review", ReviewConfig)  # type: ignore[assignment]
    settings = load_review_settings(review_cfg.settings)
    return DecisionRule(policy=review_cfg.policy,
                        min_submitted=effective_min_submitted(cfg.argilla, settings.min_submitted))
