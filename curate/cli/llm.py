"""`curate llm ...`: check the endpoint, see what calls cost, manage the request cache."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, console, get_config, workspace_for
from curate.errors import CurateError, InputError
from curate.llm import LLMCache, complete_frame, usage_summary
from curate.llm.client import cost_of

# curate.llm pulls in the openai SDK (~0.5 s); import it in the commands that call it, so
# every other `curate` command starts fast.
from curate.progress import progress_bar
from curate.workspace import atomic_write_parquet

llm_app = typer.Typer(no_args_is_help=True, help="The LLM endpoint and its request cache.")


def _cache(config):

    return LLMCache.for_workspace(workspace_for(get_config(config)).root)


@llm_app.command()
def ping(
    config: ConfigOpt = None,
    prompt: Annotated[str, typer.Option(help="What to ask.")] = "Say hello in one short sentence.",
    max_tokens: Annotated[int, typer.Option(help="Cap on the reply length.")] = 32,
) -> None:
    """Send one uncached request to the configured endpoint and show the reply."""

    cfg = get_config(config)
    started = time.perf_counter()
    out = complete_frame(pl.DataFrame({"request_id": ["ping"], "prompt": [prompt]}), cfg.llm, stage="ping",
                         cache=None, overrides={"max_tokens": max_tokens}, prices=cfg.prices)
    row = out.row(0, named=True)
    console.print(f"endpoint {cfg.llm.base_url} model {cfg.llm.model}: {row['status']} in {time.perf_counter() - started:.2f}s")
    if row["status"] != "ok":
        raise CurateError(f"{cfg.llm.base_url}: {row['error']}")
    if row["reasoning"]:
        console.print(f"[dim]reasoning:[/] {row['reasoning']}", markup=True, highlight=False)
    console.print(f"answer: {row['content']}", markup=False, highlight=False)
    console.print(f"finish_reason={row['finish_reason']} tokens={row['prompt_tokens']}+{row['completion_tokens']}")


def _read_requests(path: Path) -> pl.DataFrame:
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        df = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_ndjson(path)
    except Exception as exc:  # polars raises several types for unreadable files
        raise InputError(path, f"cannot read requests ({path.suffix or 'no suffix'}; want .parquet or .jsonl): {exc}") from exc
    if "request_id" not in df.columns:
        raise InputError(path, "missing column", field="request_id")
    if "prompt" not in df.columns and "messages" not in df.columns:
        raise InputError(path, "needs a prompt or a messages column", field="prompt")
    return df


@llm_app.command()
def batch(
    requests: Annotated[Path, typer.Argument(help="Requests: .parquet or .jsonl with request_id and prompt (or messages).")],
    out: Annotated[Path, typer.Argument(help="Results .parquet (written atomically when all requests are done).")],
    config: ConfigOpt = None,
    stage: Annotated[str, typer.Option(help="Name for accounting.")] = "batch",
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Ignore cached results (new results are still cached).")] = False,
    schema: Annotated[Path | None, typer.Option(help="JSON schema file for structured output.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Override the endpoint's max_tokens.")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Override the endpoint's max_concurrency.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
) -> None:
    """Run a file of chat requests through the endpoint, with the workspace's cache (resumable)."""

    cfg = get_config(config)
    df = _read_requests(requests)
    endpoint = cfg.llm if concurrency is None else cfg.llm.model_copy(update={"max_concurrency": concurrency})
    response_schema = None
    if schema is not None:
        try:
            response_schema = json.loads(schema.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(schema, f"not a JSON schema file: {exc}") from exc
    try:
        with _cache(config) as cache, progress_bar(f"llm {stage}", df.height, enabled=not quiet) as advance:
            results = complete_frame(df, endpoint, stage=stage, cache=cache, refresh=no_cache, response_schema=response_schema,
                                     overrides={"max_tokens": max_tokens} if max_tokens else None, progress=advance,
                                     prices=cfg.prices)
    except ValueError as exc:
        raise InputError(requests, str(exc)) from exc
    atomic_write_parquet(out, results)
    summary = usage_summary(results, stage, cfg.prices)
    console.print(f"wrote {out}: {summary['ok']} ok, {summary['errors']} errors, {summary['cached']} from cache, "
                  f"{summary['prompt_tokens']}+{summary['completion_tokens']} tokens")


@llm_app.command()
def usage(config: ConfigOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Calls, tokens and cost per stage, over every run of this workspace (from the request cache)."""

    cfg = get_config(config)
    with _cache(config) as cache:
        rows = cache.usage_by_stage()
    for r in rows:
        r["cost_usd"] = cost_of(cfg.prices, r["model"], r["prompt_tokens"], r["completion_tokens"])
    if as_json:
        console.print_json(json.dumps(rows))
        return
    if not rows:
        console.print("no LLM calls recorded in this workspace")
        return
    table = Table(title="LLM usage by stage (each call counted once, under the stage that made it)")
    for col in ("stage", "model", "calls", "prompt tokens", "completion tokens", "errors", "cost USD"):
        table.add_column(col)
    for r in rows:
        cost = "-" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
        table.add_row(r["stage"], r["model"], str(r["calls"]), str(r["prompt_tokens"]), str(r["completion_tokens"]),
                      str(r["errors"]), cost)
    console.print(table)


@llm_app.command("cache-stats")
def cache_stats(config: ConfigOpt = None) -> None:
    """Where the request cache is and how much it holds."""
    with _cache(config) as cache:
        stats = cache.stats()
    console.print_json(json.dumps(stats))


@llm_app.command("cache-clear")
def cache_clear(
    config: ConfigOpt = None,
    stage: Annotated[str | None, typer.Option(help="Only calls first made by this stage.")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Forget cached calls, so the next run asks the endpoint again."""
    if not yes and not typer.confirm(f"delete cached LLM calls{f' of stage {stage}' if stage else ''}?"):
        raise typer.Abort()
    with _cache(config) as cache:
        n = cache.clear(stage)
    console.print(f"deleted {n} cached calls")


def register(app: typer.Typer) -> None:
    app.add_typer(llm_app, name="llm")
