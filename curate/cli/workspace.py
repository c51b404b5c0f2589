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
    manifests = {s: ws.failure(s) or ws.manifest(s) for s in ws.stages()}
    if as_json:
        keys = ("status", "error", "fingerprint", "finished_at", "duration_s", "outputs")
        console.print_json(json.dumps({s: {k: m.get(k) for k in keys} for s, m in manifests.items()}))
        return
    if not manifests:
        console.print(f"no stages have run in {ws.root}")
        return
    table = Table(title=f"workspace {ws.root}")
    for col in ("stage", "status", "rows", "finished", "seconds"):
        table.add_column(col)
    for stage, m in manifests.items():
        rows = ", ".join(f"{t}={o['rows']}" for t, o in m.get("outputs", {}).items())
        state = m.get("status", "?") if m.get("status") != "failed" else f"[red]failed[/]: {m.get('error', '')}"
        table.add_row(stage, state, rows, str(m.get("finished_at", ""))[:19], str(m.get("duration_s", "")))
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
