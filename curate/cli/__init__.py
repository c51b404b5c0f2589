"""The `curate` command line: one module per command group, each adding its commands with `register(app)`."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.markup import escape

from curate.cli import dedupe, eval, flows, judge, llm, refusal_detector, refusals, release, review, stages, workspace
from curate.cli.options import err_console
from curate.errors import CurateError
from curate.secrets import install_log_redaction

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Build multilingual blocked-topic SFT datasets.")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    install_log_redaction()


# Commands whose name changed: old -> new. The old name stays, hidden, as an error naming the new.
RENAMED_COMMANDS: dict[str, str] = {}


def register_renamed(target: typer.Typer, renamed: dict[str, str]) -> None:
    for old, new in renamed.items():

        def command(ctx: typer.Context, old: str = old, new: str = new) -> None:
            raise CurateError(f"`curate {old}` was renamed: use `curate {new}`")

        settings = {"allow_extra_args": True, "ignore_unknown_options": True}
        target.command(old, hidden=True, context_settings=settings)(command)


# Order is the order of `curate --help`.
for _group in (workspace, stages, refusals, refusal_detector, dedupe, judge, review, release, eval, llm, flows):
    _group.register(app)
register_renamed(app, RENAMED_COMMANDS)


def run() -> None:
    """Entry point: user errors print one line and exit 2 instead of a traceback."""
    try:
        app()
    except CurateError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
