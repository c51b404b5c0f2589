"""From a workspace's reviewed candidates to a committed release.

Two steps: the `release` workspace stage builds the rows (reviews resolved by the conflict policy,
corrections applied, lineage attached, external sets mixed in) and keeps them as
`release/rows` and `release/excluded`; then the rows are committed to the versioned store.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl

from curate.config import Config, config_hash, stage_config
from curate.errors import CurateError
from curate.release.config import ReleaseConfig
from curate.release.mix import mix_sources
from curate.release.rows import build_release_rows
from curate.release.store import CommitResult, ReleaseStore
from curate.tables import CANDIDATES, KEYWORDS, QUESTIONS, RELEASE_ROWS, REVIEWS
from curate.workspace import StageOutput, Workspace

STAGE = RELEASE_ROWS.stage
DRAFT_TAG = "draft"
# A draft holds unreviewed rows, so it must never carry the tag consumers train from.
FORBIDDEN_DRAFT_TAGS = ("published",)
REQUIRED_INPUTS = {"reviews": str(REVIEWS), "candidates": str(CANDIDATES)}
LINEAGE_INPUTS = {"questions": str(QUESTIONS), "keywords": str(KEYWORDS)}


def release_config(cfg: Config) -> ReleaseConfig:
    return stage_config(cfg, STAGE, ReleaseConfig)  # type: ignore[return-value]


def store_uri(cfg: Config, rcfg: ReleaseConfig) -> str:
    return rcfg.store or str(Path(cfg.workspace_path) / "releases")


def release_stage(
    reviews: pl.DataFrame | None,
    candidates: pl.DataFrame,
    config: ReleaseConfig,
    questions: pl.DataFrame | None = None,
    keywords: pl.DataFrame | None = None,
    mix_files: list[Path] | None = None,  # only so their content enters the stage fingerprint
) -> StageOutput:
    if reviews is None:  # a draft made before any review sync: nothing submitted yet
        reviews = pl.DataFrame(
            schema={"candidate_id": pl.String, "campaign": pl.String, "accept": pl.Boolean, "status": pl.String}
        )
    curated, excluded = build_release_rows(reviews, candidates, config, questions=questions, keywords=keywords)
    if curated.is_empty() and config.include_pending:
        raise CurateError("no candidate is accepted or pending review (all rejected or none ok): nothing to release")
    if curated.is_empty():
        reasons = {str(k): int(v) for k, v in excluded.group_by("exclude_reason").len().iter_rows()}
        raise CurateError(
            f"no reviewed candidate was accepted, nothing to release (excluded: {reasons or 'no submitted reviews'})"
        )
    rows, mixes = mix_sources(curated, config.mix)
    accepted = candidates.join(curated.select("candidate_id"), on="candidate_id", how="semi")
    models = sorted(accepted["model"].drop_nulls().unique().to_list()) if "model" in accepted.columns else []
    campaigns = sorted(reviews.filter(pl.col("status") == "submitted")["campaign"].drop_nulls().unique().to_list())
    if config.campaigns:
        campaigns = [c for c in campaigns if c in config.campaigns]
    report = {
        "answer_models": models,
        "review_campaigns": campaigns,
        "answers_corrected": int(curated["answer_corrected"].sum()),
        "excluded_by_reason": {str(k): int(v) for k, v in excluded.group_by("exclude_reason").len().iter_rows()},
        "mixes": mixes,
        "draft": config.include_pending,
        # Released without an accepted decision: fewer than min_submitted responses so far.
        "pending_rows": int(curated.filter(pl.col("n_reviews") < (config.min_submitted or 1)).height),
        "unreviewed_rows": int(curated.filter(pl.col("n_reviews") == 0).height),
    }
    return StageOutput(tables={"rows": rows, "excluded": excluded}, report=report)


def _stage_models(ws: Workspace) -> dict[str, str]:
    """The model each earlier stage's config names, for the manifest's `models`."""
    models: dict[str, str] = {}

    def walk(stage: str, node: Any, prefix: str = "") -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "model" and isinstance(value, str):
                    models[f"{stage}{prefix}"] = value
                else:
                    walk(stage, value, f"{prefix}.{key}")

    for stage in ws.stages():
        if stage != STAGE:
            walk(stage, (ws.manifest(stage) or {}).get("config"))
    return models


def create_release(
    cfg: Config,
    *,
    tags: list[str] | tuple[str, ...] = (),
    flow_run_ids: list[str] | tuple[str, ...] = (),
    force: bool = False,
    notes: str | None = None,
    draft: bool | None = None,
) -> CommitResult:
    """Build the release rows in the workspace and commit them to the store as a new release.

    `draft` (default: `[stages.release] include_pending`) also releases candidates still pending
    review; such a release is always tagged 'draft' and may not be tagged 'published'.
    """
    rcfg = release_config(cfg)
    include_pending = rcfg.include_pending if draft is None else draft
    # Resolved here so the threshold and the mode enter the stage's config hash.
    rcfg = rcfg.model_copy(
        update={"min_submitted": rcfg.min_submitted or cfg.argilla.min_submitted, "include_pending": include_pending}
    )
    tags = list(tags)
    if include_pending:
        bad = [t for t in tags if t in FORBIDDEN_DRAFT_TAGS]
        if bad:
            raise CurateError(f"a draft release holds unreviewed rows and cannot be tagged {bad}")
        tags = [*tags, DRAFT_TAG] if DRAFT_TAG not in tags else tags
    ws = Workspace(cfg.workspace_path)
    inputs: dict[str, Any] = {}
    for name, ref in REQUIRED_INPUTS.items():
        stage, table = ref.split("/")
        manifest = ws.manifest(stage)
        if name == "reviews" and include_pending and not (manifest and table in manifest.get("outputs", {})):
            continue  # a draft may come before the first review sync
        if not manifest or manifest.get("status") != "complete" or table not in manifest.get("outputs", {}):
            raise CurateError(
                f"{ws.root}: table '{ref}' is missing; a release needs '{ref}' (run stage '{stage}' first)"
            )
        inputs[name] = ref
    for name, ref in LINEAGE_INPUTS.items():
        stage, table = ref.split("/")
        manifest = ws.manifest(stage)
        if manifest and manifest.get("status") == "complete" and table in manifest.get("outputs", {}):
            inputs[name] = ref
    if rcfg.mix:
        inputs["mix_files"] = [Path(m.path).expanduser().resolve() for m in rcfg.mix]
    store = ReleaseStore(store_uri(cfg, rcfg))
    with ws.locked():
        no_reviews = {} if "reviews" in inputs else {"reviews": None}
        result = ws.run_stage(STAGE, release_stage, inputs=inputs, config=rcfg, force=force, **no_reviews)
        rows = ws.read(RELEASE_ROWS)
        report = result.manifest["report"]
        env_flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
        models = _stage_models(ws)
        if report["answer_models"]:
            models["answers"] = ", ".join(report["answer_models"])
        metadata = {
            "config": rcfg.model_dump(mode="json"),
            "config_hash": config_hash(rcfg),
            "format": rcfg.format,
            "policy": rcfg.policy,
            "min_submitted": rcfg.min_submitted,
            "review_campaigns": report["review_campaigns"],
            "answers_corrected": report["answers_corrected"],
            "excluded_by_reason": report["excluded_by_reason"],
            "models": dict(sorted(models.items())),
            "flow_run_ids": sorted({*flow_run_ids, *([env_flow_run] if env_flow_run else [])}),
            "workspace_run_id": ws.run_id,
            "inputs": result.manifest["inputs"],
            "lineage_tables": sorted(v for k, v in inputs.items() if isinstance(v, str)),
            "mixes": report["mixes"],
            "notes": notes,
            "draft": report.get("draft", False),
            "pending_rows": report.get("pending_rows", 0),
            "unreviewed_rows": report.get("unreviewed_rows", 0),
        }
        return store.commit(rows, metadata, tags=tags)
