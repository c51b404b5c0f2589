"""`[stages.review]`: which campaign, settings file, conflict policy and push tuning."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from curate.config import ArgillaConfig
from curate.review.policy import ConflictPolicy
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


def effective_min_submitted(argilla: ArgillaConfig, settings_default: int) -> int:
    """An explicit `[argilla] min_submitted` (file or env) wins over the settings file's default."""
    return argilla.min_submitted if "min_submitted" in argilla.model_fields_set else settings_default
