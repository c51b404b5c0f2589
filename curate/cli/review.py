"""`curate review push|pull|status`: human review of candidate answers in Argilla."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, console, get_config, workspace_for
from curate.progress import progress_bar
from curate.review.push import PushLedger
from curate.review.routing import workspace_routing_status
from curate.review.sync import pull_reviews, push_for_review, review_client, review_config, safety_review_config
from curate.tables import REVIEW_AGREEMENT, REVIEWS

review_app = typer.Typer(no_args_is_help=True, help="Human review in Argilla: push candidates, pull responses.")

CampaignOpt = Annotated[str | None, typer.Option("--campaign", help="Argilla dataset name (default: [stages.review] campaign).")]
SafetyOpt = Annotated[bool, typer.Option(
    "--safety", help="The safety flow's review rows (safety_filter/review) in [stages.review] safety_campaign.")]


def _review_cfg(cfg, safety: bool, **overrides):
    return safety_review_config(cfg, **overrides) if safety else review_config(cfg, **overrides)


@review_app.command("push")
def push(
    config: ConfigOpt = None,
    campaign: CampaignOpt = None,
    settings: Annotated[Path | None, typer.Option(help="Argilla settings TOML (default: annotations/review.toml).")] = None,
    source: Annotated[str | None, typer.Option(help="Candidate table, stage/table (default: answers/candidates).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Records per request (max 500).")] = None,
    safety: SafetyOpt = False,
) -> None:
    """Create the campaign's dataset if needed and send new or changed candidates."""
    cfg = get_config(config)
    if safety and source:
        raise typer.BadParameter("--safety pushes safety_filter/review; leave out --source")
    review_cfg = _review_cfg(cfg, safety, campaign=campaign, settings=str(settings) if settings else None, source=source,
                             batch_size=batch_size)
    with progress_bar("push", None) as advance:
        report = push_for_review(cfg, workspace_for(cfg), review_cfg, progress=advance)
    console.print(
        f"push {report.campaign}: sent {report.pushed} (new {report.new}, changed {report.changed}), "
        f"skipped {report.unchanged} unchanged of {report.candidates} in {report.seconds:.2f}s "
        f"-> {cfg.argilla.api_url.rstrip('/')} dataset {report.dataset_id}"
    )
    if report.routed is not None:
        console.print(f"routed by the judge: {report.routed} (only 'human' is sent for review)")
    if report.superseded:
        console.print(f"{report.superseded} superseded: answers changed since their last push went out as new records; "
                      "verdicts on the old text no longer count")


@review_app.command("pull")
def pull(
    config: ConfigOpt = None,
    campaign: CampaignOpt = None,
    safety: SafetyOpt = False,
    full: Annotated[bool, typer.Option("--full", help="Download every reviewed record, not only what changed.")] = False,
) -> None:
    """Fetch submitted responses into review/reviews, with agreement and decisions.

    Decisions follow the one review rule ([stages.review] policy, min_submitted from the settings
    file or [argilla]) that a release uses too, so there is no per-command override."""
    cfg = get_config(config)
    review_cfg = _review_cfg(cfg, safety, campaign=campaign)
    ws = workspace_for(cfg)
    with ws.locked():
        result = pull_reviews(cfg, ws, review_cfg, full=full)
    report = result.manifest["report"]
    counts = report["pull"]
    console.print(
        f"pull {review_cfg.campaign} ({report['incremental'][review_cfg.campaign]['mode']}): "
        f"{counts['fetched']} responses, {counts['new']} new, {counts['changed']} changed; "
        f"reviews={result.rows['reviews']} decisions={report['decisions']} (policy {report['policy']}, "
        f"min_submitted {report['min_submitted']})"
    )
    if report.get("stale_reviews"):
        console.print(f"{report['stale_reviews']} stale reviews (of an earlier answer) kept as history, not counted")
    agreement = ws.read(REVIEW_AGREEMENT).filter(_in_campaign(review_cfg.campaign))
    table = Table(title="agreement")
    for col in ("question", "items", "annotators", "percent agreement", "Krippendorff alpha"):
        table.add_column(col)
    for row in agreement.iter_rows(named=True):
        pa, alpha = row["percent_agreement"], row["krippendorff_alpha"]
        table.add_row(row["question"], str(row["n_items"]), str(row["n_annotators"]),
                      "-" if pa is None else f"{pa:.3f}", "-" if alpha is None else f"{alpha:.3f}")
    console.print(table)


def _in_campaign(campaign: str):
    return pl.col("campaign") == campaign


@review_app.command("status")
def status(config: ConfigOpt = None, campaign: CampaignOpt = None, safety: SafetyOpt = False) -> None:
    """Show the campaign's progress in Argilla and what the workspace has pushed and pulled."""
    cfg = get_config(config)
    review_cfg = _review_cfg(cfg, safety, campaign=campaign)
    ws = workspace_for(cfg)
    with review_client(cfg, review_cfg) as client:
        workspace_id = client.workspace_id(cfg.argilla.workspace, create=False)
        ds = client.find_dataset(review_cfg.campaign, workspace_id)
        if ds is None:
            console.print(f"campaign '{review_cfg.campaign}': no dataset at {client.api_url} yet (run `curate review push`)")
            _print_routing(ws, review_cfg.routing)
            return
        progress = client.progress(ds["id"])
    with PushLedger.for_workspace(ws) as ledger:
        pushed = ledger.count(ds["id"])
    pulled = ws.read(REVIEWS).filter(_in_campaign(review_cfg.campaign)).height if ws.has_table(REVIEWS) else 0
    console.print(
        f"campaign '{review_cfg.campaign}' ({client.api_url}, dataset {ds['id']}): "
        f"records {progress['total']}, completed {progress['completed']}, pending {progress['pending']}; "
        f"min_submitted {ds['distribution'].get('min_submitted')}; pushed from this workspace {pushed}; "
        f"responses pulled {pulled}"
    )
    _print_routing(ws, review_cfg.routing)


def _print_routing(ws, routing) -> None:
    """Per language: routed to people, auto-decided, audit precision of auto-accept and judge-human kappa."""
    status = workspace_routing_status(ws, routing)
    if status is None:
        console.print("routing: the judge stage has not routed this workspace (every candidate goes to people)")
        return
    fmt = lambda v: "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    table = Table(title=f"judge routing and audit (target precision {routing.precision_target:.2f}, "
                        f"{routing.confidence:.0%} Wilson lower bound)")
    columns = ("language", "to_people", "auto_accept", "auto_reject", "audited", "precision", "precision_lower",
               "trusted", "kappa_accept", "kappa_satisfaction", "kappa_harmful")
    for col in columns:
        table.add_column(col)
    for row in status.iter_rows(named=True):
        table.add_row(*(fmt(row[c]) for c in columns))
    console.print(table)
    for row in status.iter_rows(named=True):
        console.print(f"  {row['language']}: {row['reason']}")


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
