"""`curate init`, `curate status`, `curate schemas`: the config file, the workspace and the record schemas."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, console, get_config, workspace_for
from curate.errors import CurateError
from curate.records import write_json_schemas
from curate.status import describe_llm_errors, workspace_status

TEMPLATE = Path(__file__).resolve().parent.parent / "templates" / "curate.toml"


def init(path: Annotated[Path, typer.Argument()] = Path("curate.toml")) -> None:
    """Write a commented default config file."""
    if path.exists():
        raise CurateError(f"{path}: already exists")
    path.write_text(TEMPLATE.read_text(encoding="utf-8"), encoding="utf-8")
    console.print(f"wrote {path}")


def status(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show each stage's status, row counts and last run."""
    cfg = get_config(config)
    ws = workspace_for(cfg)
    stages = workspace_status(ws)
    if as_json:
        console.print_json(json.dumps(stages, default=str))
        return
    if not stages:
        console.print(f"no stages have run in {ws.root}")
        return
    table = Table(title=f"workspace {ws.root}")
    for col in ("stage", "status", "rows", "finished", "seconds"):
        table.add_column(col)
    for stage, m in stages.items():
        # After a failure the rows shown are the last good run's, which are still in place.
        shown = m["last_good"] or m
        rows = ", ".join(f"{t}={o['rows']}" for t, o in (shown.get("outputs") or {}).items())
        state = m.get("status") or "?"
        if state == "incomplete":
            state = f"[yellow]incomplete[/]: {describe_llm_errors(m.get('llm_errors'))}"
        if state == "failed":
            state = f"[red]failed[/]: {m.get('error', '')}"
            if m["last_good"]:
                state += f" (last good run {str(m['last_good'].get('finished_at', ''))[:19]} kept)"
        table.add_row(stage, state, rows, str(shown.get("finished_at") or "")[:19], str(shown.get("duration_s") or ""))
    console.print(table)


def schemas(
    out: Annotated[Path, typer.Option(help="Folder for the JSON Schemas.")] = Path("schemas"),
    check: Annotated[bool, typer.Option(help="Fail if the files differ from the code.")] = False,
) -> None:
    """Write (or check) the versioned JSON Schemas of every record."""
    if not check:
        for p in write_json_schemas(out):
            console.print(f"wrote {p}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        stale = [p.name for p in write_json_schemas(Path(tmp)) if not (out / p.name).exists() or (out / p.name).read_text() != p.read_text()]
    if stale:
        raise CurateError(f"{out}: out of date: {stale}; run `curate schemas`")
    console.print("schemas up to date")


def register(app: typer.Typer) -> None:
    app.command()(init)
    app.command()(status)
    app.command()(schemas)
