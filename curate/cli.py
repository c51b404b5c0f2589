"""The `curate` command line. Each capability adds its commands from its own module (see COMMAND_MODULES)."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from curate.config import Config, load_config
from curate.errors import CurateError
from curate.secrets import install_log_redaction
from curate.store import Workspace

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Build multilingual blocked-topic SFT datasets.")
console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config (default: ./curate.toml).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Rerun even if inputs and config are unchanged.")]


def get_config(config: Path | None) -> Config:
    return load_config(config)


def workspace_for(cfg: Config) -> Workspace:
    return Workspace(cfg.workspace_path)


def print_result(result) -> None:
    state = "[yellow]skipped (unchanged)[/]" if result.skipped else "[green]done[/]"
    rows = ", ".join(f"{t}={n}" for t, n in result.rows.items())
    console.print(f"{result.stage}: {state} {rows}")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()


@app.command()
def init(path: Annotated[Path, typer.Argument()] = Path("curate.toml")) -> None:
    """Write a commented default config file."""
    if path.exists():
        raise CurateError(f"{path}: already exists")
    template = Path(__file__).parent / "templates" / "curate.toml"
    path.write_text(template.read_text(encoding="utf-8"), encoding="utf-8")
    console.print(f"wrote {path}")


@app.command()
def ingest(
    sources: Annotated[list[Path], typer.Argument(help="Seed files: .jsonl .json .csv .tsv .parquet .txt or a datasets folder.")],
    config: ConfigOpt = None,
    force: ForceOpt = False,
) -> None:
    """Read seed prompts into the workspace (language detected with fastText where missing)."""
    from curate.ingest import IngestStageConfig, ingest_stage

    cfg = get_config(config)
    ws = workspace_for(cfg)
    stage_cfg = IngestStageConfig(ingest=cfg.ingest, langid=cfg.langid)
    with ws.locked():
        result = ws.run_stage("ingest", ingest_stage, inputs={"sources": [p.resolve() for p in sources]}, config=stage_cfg, force=force)
    print_result(result)


@app.command()
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


@app.command()
def schemas(
    out: Annotated[Path, typer.Option(help="Folder for the JSON Schemas.")] = Path("schemas"),
    check: Annotated[bool, typer.Option(help="Fail if the files differ from the code.")] = False,
) -> None:
    """Write (or check) the versioned JSON Schemas of every record."""
    import tempfile

    from curate.records import write_json_schemas

    if not check:
        for p in write_json_schemas(out):
            console.print(f"wrote {p}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        stale = [p.name for p in write_json_schemas(Path(tmp)) if not (out / p.name).exists() or (out / p.name).read_text() != p.read_text()]
    if stale:
        raise CurateError(f"{out}: out of date: {stale}; run `curate schemas`")
    console.print("schemas up to date")


# Modules that add commands: each defines `register(app)`. Missing optional modules are skipped
# only while they are being written; every listed module must import in a release.
COMMAND_MODULES: list[str] = ["curate.cli_release", "curate.cli_curation_answers", "curate.cli_eval", "curate.cli_llm", "curate.cli_flows", "curate.cli_curation", "curate.cli_review", "curate.cli_dedupe", "curate.cli_refusal"]

for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def run() -> None:
    """Entry point: user errors print one line and exit 2 instead of a traceback."""
    try:
        app()
    except CurateError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
