"""What every command group shares: the consoles, the common options and the config/workspace helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from curate.config import Config, load_config
from curate.validate import check_config
from curate.workspace import Workspace

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config (default: ./curate.toml).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even if inputs and config are unchanged.")]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Ignore cached LLM replies (new ones are still cached); implies --force.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def get_config(config: Path | None) -> Config:
    """The config file (or defaults), checked whole before the command does anything."""
    return check_config(load_config(config))


def workspace_for(cfg: Config) -> Workspace:
    return Workspace(cfg.workspace_path)


def print_result(result) -> None:
    state = "[yellow]skipped (unchanged)[/]" if result.skipped else "[green]done[/]"
    rows = ", ".join(f"{t}={n}" for t, n in result.rows.items())
    console.print(f"{result.stage}: {state} {rows}")


def print_report(result, keys: tuple[str, ...]) -> None:
    report = result.manifest.get("report", {})
    for key in keys:
        if key in report:
            console.print(f"  {key}: {report[key]}")
