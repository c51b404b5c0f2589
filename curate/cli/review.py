"""`curate review push|pull|status`: human review of candidate answers in Argilla."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, console, get_config, workspace_for
from curate.config import Config, stage_config

review_app = typer.Typer(no_args_is_help=True, help="Human review in Argilla: push candidates, pull responses.")

CampaignOpt = Annotated[str | None, typer.Option("--campaign", help="Argilla dataset name (default: [stages.review] campaign).")]


def _review_config(cfg: Config, campaign: str | None, **overrides):
    from curate.review.config import ReviewConfig

    review_cfg = stage_config(cfg, "review", ReviewConfig)
    changes = {k: v for k, v in {"campaign": campaign, **overrides}.items() if v is not None}
    return review_cfg.model_copy(update=changes) if changes else review_cfg


def _client(cfg: Config, review_cfg):
    from curate.review.client import ArgillaClient

    return ArgillaClient.from_config(cfg.argilla, timeout_s=review_cfg.timeout_s, max_retries=review_cfg.max_retries)


@review_app.command("push")
def push(
    config: ConfigOpt = None,
    campaign: CampaignOpt = None,
    settings: Annotated[Path | None, typer.Option(help="Argilla settings TOML (default: annotations/review.toml).")] = None,
    source: Annotated[str | None, typer.Option(help="Candidate table, stage/table (default: answers/candidates).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Records per request (max 500).")] = None,
) -> None:
    """Create the campaign's dataset if needed and send new or changed candidates."""
    from curate.progress import progress_bar
    from curate.review.config import effective_min_submitted
    from curate.review.push import push_workspace
    from curate.review.settings import load_review_settings

    cfg = get_config(config)
    review_cfg = _review_config(cfg, campaign, settings=str(settings) if settings else None, source=source,
                                batch_size=batch_size)
    review_settings = load_review_settings(review_cfg.settings)
    min_submitted = effective_min_submitted(cfg.argilla, review_settings.min_submitted)
    ws = workspace_for(cfg)
    with _client(cfg, review_cfg) as client, progress_bar("push", None) as advance:
        report = push_workspace(
            ws, client, review_settings, campaign=review_cfg.campaign, workspace=cfg.argilla.workspace,
            min_submitted=min_submitted, source=review_cfg.source, run=review_cfg.run,
            batch_size=review_cfg.batch_size, progress=advance,
        )
    console.print(
        f"push {report.campaign}: sent {report.pushed} (new {report.new}, changed {report.changed}), "
        f"skipped {report.unchanged} unchanged of {report.candidates} in {report.seconds:.2f}s "
        f"-> {client.api_url} dataset {report.dataset_id}"
    )


@review_app.command("pull")
def pull(
    config: ConfigOpt = None,
    campaign: CampaignOpt = None,
    policy: Annotated[str | None, typer.Option(help="Conflict policy: majority or any-reject.")] = None,
    min_submitted: Annotated[int | None, typer.Option(help="Responses needed for a decision (default: the dataset's).")] = None,
) -> None:
    """Fetch submitted responses into review/reviews, with agreement and decisions."""
    from curate.review.pull import pull_workspace

    cfg = get_config(config)
    review_cfg = _review_config(cfg, campaign, policy=policy)
    ws = workspace_for(cfg)
    with _client(cfg, review_cfg) as client, ws.locked():
        result = pull_workspace(ws, client, campaign=review_cfg.campaign, workspace=cfg.argilla.workspace,
                                policy=review_cfg.policy, min_submitted=min_submitted)
    report = result.manifest["report"]
    counts = report["pull"]
    console.print(
        f"pull {review_cfg.campaign}: {counts['fetched']} responses, {counts['new']} new, {counts['changed']} changed; "
        f"reviews={result.rows['reviews']} decisions={report['decisions']} (policy {report['policy']}, "
        f"min_submitted {report['min_submitted']})"
    )
    agreement = ws.read("review/agreement").filter(_in_campaign(review_cfg.campaign))
    table = Table(title="agreement")
    for col in ("question", "items", "annotators", "percent agreement", "Krippendorff alpha"):
        table.add_column(col)
    for row in agreement.iter_rows(named=True):
        pa, alpha = row["percent_agreement"], row["krippendorff_alpha"]
        table.add_row(row["question"], str(row["n_items"]), str(row["n_annotators"]),
                      "-" if pa is None else f"{pa:.3f}", "-" if alpha is None else f"{alpha:.3f}")
    console.print(table)


def _in_campaign(campaign: str):
    import polars as pl

    return pl.col("campaign") == campaign


@review_app.command("status")
def status(config: ConfigOpt = None, campaign: CampaignOpt = None) -> None:
    """Show the campaign's progress in Argilla and what the workspace has pushed and pulled."""
    from curate.review.push import PushLedger

    cfg = get_config(config)
    review_cfg = _review_config(cfg, campaign)
    ws = workspace_for(cfg)
    with _client(cfg, review_cfg) as client:
        workspace_id = client.workspace_id(cfg.argilla.workspace, create=False)
        ds = client.find_dataset(review_cfg.campaign, workspace_id)
        if ds is None:
            console.print(f"campaign '{review_cfg.campaign}': no dataset at {client.api_url} yet (run `curate review push`)")
            return
        progress = client.progress(ds["id"])
    pushed = PushLedger.for_workspace(ws).count(ds["id"])
    reviews_path = ws.table_path("review", "reviews")
    pulled = 0
    if reviews_path.exists():
        import polars as pl

        pulled = pl.read_parquet(reviews_path).filter(_in_campaign(review_cfg.campaign)).height
    console.print(
        f"campaign '{review_cfg.campaign}' ({client.api_url}, dataset {ds['id']}): "
        f"records {progress['total']}, completed {progress['completed']}, pending {progress['pending']}; "
        f"min_submitted {ds['distribution'].get('min_submitted')}; pushed from this workspace {pushed}; "
        f"responses pulled {pulled}"
    )


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
