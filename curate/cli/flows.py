"""`curate run` (a flow, here and now) and `curate serve` (deployments with cron schedules on a
Prefect server)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, ForceOpt, console, get_config
from curate.errors import CurateError

DEFAULT_SERVER = "http://127.0.0.1:4200/api"
FLOWS = ("curation", "review-sync", "release")


def _flow(name: str):
    # The flow modules import Prefect (heavy, ~1-2 s): only `run` and `serve` load them.
    if name == "curation":
        from flows.curation import curation_flow

        return curation_flow
    if name == "review-sync":
        from flows.review_sync import review_sync_flow

        return review_sync_flow
    if name == "release":
        from flows.release import release_flow

        return release_flow
    raise CurateError(f"unknown flow '{name}' (one of {', '.join(FLOWS)})")


def _print_summaries(summaries: list[dict]) -> None:
    table = Table(title="curation flow")
    for col in ("stage", "state", "rows", "seconds", "shards"):
        table.add_column(col)
    for s in summaries:
        shards = s.get("shards") or {}
        table.add_row(
            s["stage"],
            "[yellow]skipped (unchanged)[/]" if s["skipped"] else "[green]done[/]",
            ", ".join(f"{t}={n}" for t, n in s["rows"].items()),
            "" if s["skipped"] else str(s.get("duration_s", "")),
            f"{shards['total']} ({shards['resumed']} resumed)" if shards else "",
        )
    console.print(table)


def _server_api_url() -> str:
    """The Prefect API to register deployments on: PREFECT_API_URL, else the local server script's."""
    import httpx

    url = os.environ.get("PREFECT_API_URL") or DEFAULT_SERVER
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise CurateError(
            f"no Prefect server answers at {url} ({type(exc).__name__}); start one with "
            "`bash scripts/prefect-server.sh start` or set PREFECT_API_URL"
        ) from exc
    return url


def _quiet_http_logs() -> None:
    # One INFO line per API and LLM request would bury the stage progress.
    for name in ("httpx", "httpx2", "httpcore", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run(
    config: ConfigOpt = None,
    flow: Annotated[str, typer.Option("--flow", help="curation, review-sync or release.")] = "curation",
    seeds: Annotated[list[Path] | None, typer.Option("--seeds", help="Seed files (default: \\[stages.orchestrate] seeds).")] = None,
    until: Annotated[str | None, typer.Option(help="Stop after this curation stage.")] = None,
    force: ForceOpt = False,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Release flow: tag the new release (repeatable).")] = None,
    draft: Annotated[bool, typer.Option("--draft", help="Release flow: include candidates still pending review; tagged 'draft'.")] = False,
) -> None:
    """Run a flow here and now (Prefect's embedded server unless PREFECT_API_URL names one)."""
    config_path = str(config.resolve()) if config else None
    if flow == "curation":
        from flows.curation import check_run_args, curation_flow  # Prefect: see _flow

        seed_args = [str(p.resolve()) for p in seeds] if seeds else None
        check_run_args(config_path, seed_args, until)
        _quiet_http_logs()
        summaries = curation_flow(config_path=config_path, seeds=seed_args, until=until, force=force)
        _print_summaries(summaries)
        return
    if seeds or until:
        raise CurateError("--seeds and --until apply to the curation flow only")
    if (tag or draft) and flow != "release":
        raise CurateError("--tag and --draft apply to the release flow only")
    _quiet_http_logs()
    release_args = {"tags": tag, "force": force, "draft": draft or None}
    result = _flow(flow)(config_path=config_path, **(release_args if flow == "release" else {}))
    console.print_json(data=result)


def serve(
    config: ConfigOpt = None,
    curation_cron: Annotated[str, typer.Option(help="Cron for the curation flow ('' for on demand only).")] = "0 2 * * *",
    review_sync_cron: Annotated[str, typer.Option(help="Cron for the review-sync flow ('' for on demand only).")] = "0 * * * *",
    release_cron: Annotated[str, typer.Option(help="Cron for the release flow (default: on demand only).")] = "",
    name: Annotated[str, typer.Option(help="Deployment name suffix.")] = "local",
) -> None:
    """Register the flows as deployments with cron schedules on a Prefect server and run what it schedules.

    Runs until interrupted. Trigger a run by hand: `prefect deployment run 'curation/local'`.
    """
    from prefect import serve as prefect_serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config_path = str(config.resolve()) if config else (str(Path("curate.toml").resolve()) if Path("curate.toml").exists() else None)
    get_config(Path(config_path) if config_path else None)  # checked whole before anything is registered
    api = _server_api_url()
    deployments = []
    # Deployments are built under the server's settings so they register there.
    for flow_name, cron in (("curation", curation_cron), ("review-sync", review_sync_cron), ("release", release_cron)):
        deployments.append(
            _flow(flow_name).to_deployment(
                name=name, cron=cron or None, parameters={"config_path": config_path},
                description=f"curate {flow_name} over {config_path or 'default config'}",
            )
        )
    console.print(f"serving {len(deployments)} deployments on {api} (config {config_path}); Ctrl-C to stop")
    with temporary_settings({PREFECT_API_URL: api}):
        prefect_serve(*deployments, print_starting_message=True)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("serve")(serve)
