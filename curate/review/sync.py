"""Review push and pull over a workspace, from the config: the one implementation behind
`curate review push|pull` and the flows' review steps."""

from __future__ import annotations

from typing import Any

from curate.config import Config, stage_config
from curate.progress import Advance, noop
from curate.review.client import ArgillaClient
from curate.review.config import ReviewConfig, decision_rule
from curate.review.pull import pull_workspace
from curate.review.push import PushReport, push_workspace
from curate.review.settings import load_review_settings
from curate.tables import SAFETY_REVIEW
from curate.workspace import StageResult, Workspace


def review_config(cfg: Config, **overrides: Any) -> ReviewConfig:
    """`[stages.review]` with the overrides that are set (command-line options)."""
    review_cfg: ReviewConfig = stage_config(cfg, "review", ReviewConfig)  # type: ignore[assignment]
    changes = {k: v for k, v in overrides.items() if v is not None}
    return review_cfg.model_copy(update=changes) if changes else review_cfg


def safety_review_config(cfg: Config, **overrides: Any) -> ReviewConfig:
    """The safety flow's review campaign: `safety_filter/review` rows (the inverse filter's
    uncertain and unjudged candidates, with the filter's judgments) in `safety_campaign`.

    The filter already decided who needs a person, so the judge stage's routing does not apply."""
    base = review_config(cfg, **{k: v for k, v in overrides.items() if k != "campaign"})
    return base.model_copy(update={
        "campaign": overrides.get("campaign") or base.safety_campaign, "source": str(SAFETY_REVIEW),
        "routing": base.routing.model_copy(update={"enabled": False}),
    })


def review_client(cfg: Config, review_cfg: ReviewConfig) -> ArgillaClient:
    return ArgillaClient.from_config(cfg.argilla, timeout_s=review_cfg.timeout_s, max_retries=review_cfg.max_retries)


def push_for_review(cfg: Config, ws: Workspace, review_cfg: ReviewConfig | None = None, *,
                    progress: Advance = noop) -> PushReport:
    """Create the campaign's dataset if needed and send new or changed candidates."""
    review_cfg = review_cfg or review_config(cfg)
    settings = load_review_settings(review_cfg.settings)
    min_submitted = decision_rule(cfg, review_cfg).min_submitted
    with review_client(cfg, review_cfg) as client:
        report = push_workspace(
            ws, client, settings, campaign=review_cfg.campaign, workspace=cfg.argilla.workspace,
            min_submitted=min_submitted, source=review_cfg.source, run=review_cfg.run, batch_size=review_cfg.batch_size,
            progress=progress, routing=review_cfg.routing,
        )
    return report


def pull_reviews(cfg: Config, ws: Workspace, review_cfg: ReviewConfig | None = None, *,
                 full: bool = False) -> StageResult:
    """Fetch submitted responses into review/reviews, with agreement and decisions.

    Decisions follow the one review rule (`decision_rule`) that push and a release use too, so
    there is no per-command override of policy or min_submitted."""
    review_cfg = review_cfg or review_config(cfg)
    rule = decision_rule(cfg, review_cfg)
    with review_client(cfg, review_cfg) as client:
        return pull_workspace(ws, client, campaign=review_cfg.campaign, workspace=cfg.argilla.workspace,
                              rule=rule, source=review_cfg.source, full=full,
                              full_pull_every=review_cfg.full_pull_every)
