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
from curate.release.auto import auto_decisions
from curate.release.config import ReleaseBuild, ReleaseConfig
from curate.records import ReleaseRow, polars_schema
from curate.release.assemble import read_facts, write_rows
from curate.release.mix import check_unique_row_ids, mixed_in
from curate.release.rows import _reviews_frame, candidate_facts, decide_rows, require_columns, texts_of, with_texts
from curate.release.table_mix import with_accepted_reviews
from curate.release.store import FORBIDDEN_DRAFT_TAGS, ROWS_FILE_KEY, CommitResult, ReleaseStore
from curate.review.config import ReviewConfig, decision_rule
from curate.review.policy import resolve_reviews
from curate.review.routing import RoutingConfig, current_routing
from curate.tables import (
    CANDIDATES,
    JUDGMENTS,
    KEYWORDS,
    QUESTIONS,
    RELEASE_ROWS,
    REVIEWS,
    ROUTING,
    SAFETY_REVIEW,
    SAFETY_SELECTED,
)
from curate.workspace import USABLE_STATUSES, StageOutput, StageResult, Workspace

STAGE = RELEASE_ROWS.stage
DRAFT_TAG = "draft"
REQUIRED_INPUTS = {"reviews": str(REVIEWS), "candidates": str(CANDIDATES)}
LINEAGE_INPUTS = {"questions": str(QUESTIONS), "keywords": str(KEYWORDS)}
MIX_TABLE = "mix_table__"
MIX_REVIEW = "mix_review__"  # mix_review__<name>: safety_filter/review, whose people-accepted rows join the mix


def release_config(cfg: Config) -> ReleaseConfig:
    return stage_config(cfg, STAGE, ReleaseConfig)  # type: ignore[return-value]


def store_uri(cfg: Config, rcfg: ReleaseConfig) -> str:
    return rcfg.store or str(Path(cfg.workspace_path) / "releases")


def release_stage(
    reviews: pl.DataFrame | None,
    candidates: pl.DataFrame | Path,
    config: ReleaseBuild,
    questions: pl.DataFrame | None = None,
    keywords: pl.DataFrame | None = None,
    mix_files: list[Path] | None = None,  # only so their content enters the stage fingerprint
    routing: pl.DataFrame | None = None,
    gate: RoutingConfig | None = None,
    scratch: Path | None = None,
    **mix_tables: pl.DataFrame,  # mix_table__<name>: the workspace table a `table` mix source names
) -> StageOutput:
    """The release rows and why the other candidates are out. `candidates` as the Path of their
    Parquet file (what `create_release` passes) is read in batches and the rows are written to a
    file in `scratch` (curate.release.assemble); as a frame, everything happens in memory."""
    if reviews is None:  # a draft made before any review sync: nothing submitted yet
        reviews = pl.DataFrame(
            schema={"candidate_id": pl.String, "campaign": pl.String, "accept": pl.Boolean, "status": pl.String}
        )
    rule = config.rule
    config = config.release
    auto, auto_report = None, {}
    if routing is not None:
        gated = _reviews_frame(reviews)
        if config.campaigns:
            gated = gated.filter(pl.col("campaign").is_in(config.campaigns))
        human = resolve_reviews(gated, rule.policy, rule.min_submitted)
        auto, auto_report = auto_decisions(routing, human, gate or RoutingConfig(), draft=config.include_pending)
    require_columns(reviews, str(REVIEWS))
    if isinstance(candidates, Path):
        require_columns(pl.DataFrame(schema=pl.read_parquet_schema(candidates)), str(CANDIDATES))
        facts = read_facts(candidates, reviews["candidate_id"])
    else:
        require_columns(candidates, str(CANDIDATES))
        facts = candidate_facts(candidates, reviews["candidate_id"])
    curated, excluded = decide_rows(reviews, facts, config, rule=rule, questions=questions, keywords=keywords,
                                    auto_decisions=auto)
    if curated.is_empty() and config.include_pending:
        raise CurateError("no candidate is accepted or pending review (all rejected or none ok): nothing to release")
    if curated.is_empty():
        reasons = {str(k): int(v) for k, v in excluded.group_by("exclude_reason").len().iter_rows()}
        raise CurateError(
            f"no reviewed candidate was accepted, nothing to release (excluded: {reasons or 'no submitted reviews'})"
        )
    auto_accepted = pl.col("candidate_id").is_in(auto_report.get("auto_accepted_ids", []))
    tables = {name.removeprefix(MIX_TABLE): frame for name, frame in mix_tables.items() if name.startswith(MIX_TABLE)}
    if any(name.startswith(MIX_REVIEW) for name in mix_tables):
        # Only people's decisions (never the draft's pending or the judge's auto-accept) release a safety review row.
        people = resolve_reviews(_reviews_frame(reviews), rule.policy, rule.min_submitted)
        for name, review in mix_tables.items():
            if name.startswith(MIX_REVIEW):
                source = name.removeprefix(MIX_REVIEW)
                tables[source] = with_accepted_reviews(tables[source], review, people)
    parts, mixes = mixed_in(curated.height, config.mix, tables)
    extra = pl.concat(parts, how="vertical_relaxed") if parts else pl.DataFrame(schema=polars_schema(ReleaseRow))
    check_unique_row_ids(pl.concat([curated["row_id"], extra["row_id"]]))
    rows: pl.DataFrame | Path
    if isinstance(candidates, Path):
        rows = Path(scratch or candidates.parent) / f".{RELEASE_ROWS.table}.assembled.parquet"
        corrected = write_rows(curated, extra, candidates, rows)
    else:
        released = with_texts(curated, texts_of(candidates))
        corrected = int(released["answer_corrected"].sum())
        # Mixed-in rows are never evaluation prompts.
        rows = pl.concat([released, extra], how="vertical_relaxed").sort("row_id").with_columns(
            pl.col("split").fill_null("train"))
    accepted = facts.join(curated.select("candidate_id"), on="candidate_id", how="semi")
    models = sorted(accepted["model"].drop_nulls().unique().to_list()) if "model" in accepted.columns else []
    campaigns = sorted(reviews.filter(pl.col("status") == "submitted")["campaign"].drop_nulls().unique().to_list())
    if config.campaigns:
        campaigns = [c for c in campaigns if c in config.campaigns]
    report = {
        "answer_models": models,
        "review_campaigns": campaigns,
        "answers_corrected": corrected,
        "excluded_by_reason": {str(k): int(v) for k, v in excluded.group_by("exclude_reason").len().iter_rows()},
        "mixes": mixes,
        "draft": config.include_pending,
        # Released without an accepted decision: fewer than min_submitted responses so far.
        "pending_rows": int(curated.filter((pl.col("n_reviews") < rule.min_submitted) & ~auto_accepted).height),
        "unreviewed_rows": int(curated.filter((pl.col("n_reviews") == 0) & ~auto_accepted).height),
        "review_split": _review_split(curated, auto_accepted, auto_report),
    }
    return StageOutput(tables={"rows": rows, "excluded": excluded}, report=report)


def _review_split(curated: pl.DataFrame, auto_accepted: pl.Expr, auto_report: dict[str, Any]) -> dict[str, Any]:
    """How the released curate rows were decided: by people, or by the judge's policy at its audited precision."""
    return {
        "human_reviewed": int(curated.filter(pl.col("n_reviews") > 0).height),
        "auto_accepted": int(curated.filter(auto_accepted).height),
        "auto_accepted_by_language": {str(k): int(v) for k, v in curated.filter(auto_accepted).group_by("language").len()
                                      .sort("language").iter_rows()},
        "auto_accept_refused": auto_report.get("auto_accept_refused", {}),
        "audit": auto_report.get("audit", {}),
        "audit_confidence": auto_report.get("audit_confidence"),
    }


def _judges(ws: Workspace) -> dict[str, Any]:
    """Which judges and rubric versions scored the candidates (empty without a judge stage)."""
    report = (ws.manifest(JUDGMENTS.stage) or {}).get("report") or {}
    return {"judges": report.get("judges", []), "rubrics": report.get("rubrics", {})}


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


def stage_inputs(ws: Workspace, rcfg: ReleaseConfig, routing: RoutingConfig) -> tuple[dict[str, Any], RoutingConfig | None]:
    """The `release` stage's inputs in `ws` (and the routing gate's config, `routing`, when the judge
    routed), or an error naming the table that is missing."""
    inputs: dict[str, Any] = {}
    for name, ref in REQUIRED_INPUTS.items():
        stage, table = ref.split("/")
        manifest = ws.manifest(stage)
        if name == "reviews" and rcfg.include_pending and not (manifest and table in manifest.get("outputs", {})):
            continue  # a draft may come before the first review sync
        if not manifest or manifest.get("status") not in USABLE_STATUSES or table not in manifest.get("outputs", {}):
            raise CurateError(
                f"{ws.root}: table '{ref}' is missing; a release needs '{ref}' (run stage '{stage}' first)"
            )
        inputs[name] = ref
    for name, ref in LINEAGE_INPUTS.items():
        stage, table = ref.split("/")
        manifest = ws.manifest(stage)
        if manifest and manifest.get("status") in USABLE_STATUSES and table in manifest.get("outputs", {}):
            inputs[name] = ref
    if any(m.path for m in rcfg.mix):
        inputs["mix_files"] = [Path(m.path).expanduser().resolve() for m in rcfg.mix if m.path]
    for mix in rcfg.mix:
        if mix.table:
            stage, _, table = mix.table.partition("/")
            manifest = ws.manifest(stage)
            if not manifest or manifest.get("status") not in USABLE_STATUSES or table not in manifest.get("outputs", {}):
                raise CurateError(f"{ws.root}: mix '{mix.name}' needs table '{mix.table}' (run `curate run --flow safety` first)")
            inputs[f"{MIX_TABLE}{mix.name}"] = mix.table
            review = ws.manifest(SAFETY_REVIEW.stage)
            if mix.table == str(SAFETY_SELECTED) and review and SAFETY_REVIEW.table in review.get("outputs", {}):
                inputs[f"{MIX_REVIEW}{mix.name}"] = str(SAFETY_REVIEW)
    gate = None
    # With routing turned off people decide everything (push sends every candidate): an old table's
    # auto decisions must not apply.
    if routing.enabled and ws.has_table(ROUTING):
        inputs["routing"] = str(ROUTING)
        gate = routing
    return inputs, gate


def refresh_routing(ws: Workspace, routing: RoutingConfig) -> None:
    """Bring `route/routing` up to date with `judge/judgments` (the caller holds the workspace lock).

    Push routes; a judge rerun after the last push (answers regenerated, failed calls fixed, judge
    settings changed) would otherwise leave the release auto-accepting or excluding rows by routes
    made for other answers. Only a table the route stage made (it records the judgments it read) is
    redone; the rows newly routed to people stay pending until the next push."""
    routed_from = ((ws.manifest(ROUTING.stage) or {}).get("inputs") or {}).get("judgments")
    if routed_from is None or not ws.has_table(ROUTING):
        return
    current_routing(ws, routing)


def run_release_stage(ws: Workspace, inputs: dict[str, Any], build: ReleaseBuild, gate: RoutingConfig | None, *,
                      force: bool = False) -> StageResult:
    """Run (or skip, when unchanged) the `release` stage; the caller holds the workspace lock."""
    no_reviews = {} if "reviews" in inputs else {"reviews": None}
    # The gate's settings decide which auto-accepted rows are released, so they key the stage too.
    version = f"1+gate-{config_hash(gate)}" if gate is not None else "1"
    # Candidates go in as their file: read in batches, their texts joined back in bounded memory.
    return ws.run_stage(STAGE, release_stage, inputs=inputs, config=build, force=force, version=version, gate=gate,
                        paths={"candidates"}, scratch=ws.stage_dir(STAGE), **no_reviews)


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
    # Resolved here so the mode and the review rule enter the stage's config hash.
    rcfg = rcfg.model_copy(update={"include_pending": include_pending})
    # Parsed once: the review rule, the routing refresh and the gate all read `[stages.review]`.
    review_cfg: ReviewConfig = stage_config(cfg, "review", ReviewConfig)  # type: ignore[assignment]
    rule = decision_rule(cfg, review_cfg)
    build = ReleaseBuild(release=rcfg, rule=rule)
    tags = list(tags)
    if include_pending:
        bad = [t for t in tags if t in FORBIDDEN_DRAFT_TAGS]
        if bad:
            raise CurateError(f"a draft release holds unreviewed rows and cannot be tagged {bad}")
        tags = [*tags, DRAFT_TAG] if DRAFT_TAG not in tags else tags
    ws = Workspace(cfg.workspace_path)
    store = ReleaseStore(store_uri(cfg, rcfg))
    with ws.locked():
        refresh_routing(ws, review_cfg.routing)
        inputs, gate = stage_inputs(ws, rcfg, review_cfg.routing)
        result = run_release_stage(ws, inputs, build, gate, force=force)
        # The file itself: the store reads, hashes and writes it in batches, never holding the whole table.
        rows = ws.table_path(RELEASE_ROWS.stage, RELEASE_ROWS.table)
        report = result.manifest["report"]
        env_flow_run = os.environ.get("PREFECT__FLOW_RUN_ID")
        models = _stage_models(ws)
        if report["answer_models"]:
            models["answers"] = ", ".join(report["answer_models"])
        metadata = {
            "config": rcfg.model_dump(mode="json"),
            "config_hash": config_hash(build),
            "format": rcfg.format,
            "policy": rule.policy,
            "min_submitted": rule.min_submitted,
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
            "review_split": report.get("review_split"),
            ROWS_FILE_KEY: result.manifest["outputs"][RELEASE_ROWS.table]["sha256"],
            **_judges(ws),
        }
        return store.commit(rows, metadata, tags=tags)
