"""`curate release …`, `curate versions …` and `curate export hf`: releases, their versions and exports."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, JsonOpt, console, get_config
from curate.errors import CurateError
from curate.release import ReleaseStore, checkout, create_release, diff_releases, export_hf, push_to_hub, release_config, store_uri

release_app = typer.Typer(no_args_is_help=True, help="Build releases from reviewed candidates.")
versions_app = typer.Typer(no_args_is_help=True, help="Inspect, compare, verify, tag and check out releases.")
export_app = typer.Typer(no_args_is_help=True, help="Export a release.")

StoreOpt = Annotated[str | None, typer.Option("--store", help="Release store URI (default: [stages.release].store).")]
FormatOpt = Annotated[
    str | None, typer.Option("--format", "-f", help="messages | reasoning | prompt_response (default: config).")
]


def _open(config: Path | None, store: str | None):

    cfg = get_config(config)
    rcfg = release_config(cfg)
    return ReleaseStore(store or store_uri(cfg, rcfg)), rcfg


def _print_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@release_app.command("create")
def release_create(
    config: ConfigOpt = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", "-t", help="Tag the new release (repeatable).")] = None,
    flow_run_id: Annotated[
        list[str] | None, typer.Option("--flow-run-id", help="Record an orchestration run ID (repeatable).")
    ] = None,
    notes: Annotated[str | None, typer.Option(help="Free text kept in the manifest.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild the rows even if inputs are unchanged.")] = False,
    draft: Annotated[
        bool,
        typer.Option("--draft", help="Also include candidates still pending review; the release is tagged 'draft'."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Resolve reviews, build rows with lineage, mix in external sets and commit a new release."""

    cfg = get_config(config)
    result = create_release(cfg, tags=tag or [], flow_run_ids=flow_run_id or [], force=force, notes=notes, draft=draft or None)
    m = result.manifest
    if as_json:
        _print_json(
            {
                "created": result.created,
                "version": m["version"],
                "content_hash": m["content_hash"],
                "rows": m["rows"],
                "draft": m.get("draft", False),
                "pending_rows": m.get("pending_rows", 0),
                "unreviewed_rows": m.get("unreviewed_rows", 0),
            }
        )
        return
    state = "[green]created[/]" if result.created else "[yellow]unchanged (same content as latest)[/]"
    console.print(f"release {m['version']}: {state} rows={m['rows']} content_hash={m['content_hash'][:16]}")
    if m.get("draft"):
        console.print(f"[yellow]draft[/]: {m['pending_rows']} rows pending review ({m['unreviewed_rows']} with no review yet)")
    console.print("by language: " + ", ".join(f"{k}={v}" for k, v in m["by_language"].items()))


@versions_app.command("list")
def versions_list(config: ConfigOpt = None, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Every release with its rows, content hash, parent and tags."""
    rs, _ = _open(config, store)
    manifests = rs.manifests()
    tags: dict[int, list[str]] = {}
    for name, t in rs.tags().items():
        tags.setdefault(t["version"], []).append(name)
    if as_json:
        _print_json(
            [
                {k: m.get(k) for k in ("version", "content_hash", "rows", "created_at", "parent")}
                | {"tags": sorted(tags.get(m["version"], []))}
                for m in manifests
            ]
        )
        return
    if not manifests:
        console.print(f"no releases in {rs.uri}")
        return
    table = Table(title=f"releases in {rs.uri}")
    for col in ("version", "created", "rows", "content hash", "parent", "tags"):
        table.add_column(col)
    for m in manifests:
        parent = str(m["parent"]["version"]) if m.get("parent") else "-"
        table.add_row(
            str(m["version"]),
            m["created_at"][:19],
            str(m["rows"]),
            m["content_hash"][:16],
            parent,
            ", ".join(sorted(tags.get(m["version"], []))),
        )
    console.print(table)


@versions_app.command("show")
def versions_show(
    ref: Annotated[str, typer.Argument(help="Number, 'latest', tag or content-hash prefix.")] = "latest",
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A release's manifest: counts per language and topic, checksums, config, models, lineage."""
    rs, _ = _open(config, store)
    m = rs.manifest(ref)
    if as_json:
        _print_json(m)
        return
    console.print(f"[bold]release {m['version']}[/] created {m['created_at']} rows={m['rows']}")
    console.print(f"content hash {m['content_hash']}  config hash {m.get('config_hash')}")
    console.print(
        f"parent: {m['parent']['version'] if m.get('parent') else '-'}  policy: {m.get('policy')}  campaigns: {', '.join(m.get('review_campaigns', [])) or '-'}"
    )
    console.print("models: " + (", ".join(f"{k}={v}" for k, v in m.get("models", {}).items()) or "-"))
    console.print("flow runs: " + (", ".join(m.get("flow_run_ids", [])) or "-"))
    for dim in ("by_language", "by_topic", "by_source"):
        console.print(f"{dim.replace('_', ' ')}: " + ", ".join(f"{k}={v}" for k, v in m[dim].items()))
    for mix in m.get("mixes", []):
        console.print(
            f"mixed in {mix['name']}: {mix['taken']} rows (requested {mix['requested']}, seed {mix['seed']}, sha256 {mix['sha256'][:16]})"
        )
    console.print(f"files: {len(m['files'])}")


@versions_app.command("diff")
def versions_diff(
    a: str,
    b: str,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    limit: Annotated[int, typer.Option(help="Rows listed per section.")] = 20,
) -> None:
    """Rows added, removed and changed from release A to B, and count deltas per language and topic."""

    rs, _ = _open(config, store)
    va, vb = rs.resolve(a), rs.resolve(b)
    d = diff_releases(rs.read(va), rs.read(vb), va, vb)
    if as_json:
        _print_json(d.summary())
        return
    console.print(
        f"release {va} -> {vb}: [green]+{d.added.height} added[/], [red]-{d.removed.height} removed[/], "
        f"[yellow]~{d.changed.height} changed[/], {d.unchanged} unchanged"
    )
    for symbol, frame in (("+", d.added), ("-", d.removed)):
        for row in frame.head(limit).iter_rows(named=True):
            console.print(
                f"  {symbol} {row['row_id']} [{row['language']}/{row['topic']}/{row['source']}]", highlight=False
            )
    for row in d.changed.head(limit).iter_rows(named=True):
        console.print(
            f"  ~ {row['row_id']} [{row['language']}/{row['topic']}] fields: {', '.join(row['changed_fields'])}"
        )
    if not d.count_deltas.is_empty():
        table = Table(title="count deltas")
        for col in ("dimension", "value", "old", "new", "delta"):
            table.add_column(col)
        for row in d.count_deltas.iter_rows():
            table.add_row(*(f"{v:+d}" if i == 4 else str(v) for i, v in enumerate(row)))
        console.print(table)


@versions_app.command("verify")
def versions_verify(
    ref: Annotated[str | None, typer.Argument(help="One release (default: all).")] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
) -> None:
    """Recompute data-file checksums and content hashes; exit 1 naming what differs."""
    rs, _ = _open(config, store)
    reports = [rs.verify(ref)] if ref else rs.verify_all()
    failed = [r for r in reports if not r.ok]
    for r in reports:
        mark = "[green]ok[/]" if r.ok else "[red]FAILED[/]"
        console.print(f"release {r.version}: {mark} ({r.files_checked} files, {r.rows_checked} rows)")
    for r in failed:
        for problem in r.problems:
            typer.echo(f"verify failed: {problem}", err=True)
    if failed:
        raise typer.Exit(1)


@versions_app.command("checkout")
def versions_checkout(
    ref: str,
    dest: Path,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    fmt: FormatOpt = None,
    file_format: Annotated[str, typer.Option("--as", help="parquet | jsonl")] = "parquet",
) -> None:
    """Write a release to a new folder (data file + manifest)."""

    rs, rcfg = _open(config, store)
    out = checkout(rs, ref, dest, fmt or rcfg.format, file_format, rcfg)
    console.print(f"release {rs.resolve(ref)} written to {out}")


@versions_app.command("tag")
def versions_tag(name: str, ref: str, config: ConfigOpt = None, store: StoreOpt = None) -> None:
    """Point a tag (candidate, published, ...) at a release; moves it if it exists."""
    rs, _ = _open(config, store)
    tag = rs.tag(name, ref)
    console.print(f"tag {name} -> release {tag['version']} ({tag['content_hash'][:16]})")


@export_app.command("hf")
def export_hf_command(
    dest: Path,
    ref: Annotated[str, typer.Option("--release", "-r", help="Release to export.")] = "latest",
    config: ConfigOpt = None,
    store: StoreOpt = None,
    fmt: FormatOpt = None,
    push: Annotated[
        str | None, typer.Option("--push", help="Also upload to this Hub dataset repo (needs the token env var).")
    ] = None,
    public: Annotated[bool, typer.Option("--public", help="Create the Hub repo public (default private).")] = False,
) -> None:
    """Write Parquet shards per language + README.md dataset card that `datasets.load_dataset` reads."""

    rs, rcfg = _open(config, store)
    if push and not os.environ.get(rcfg.hf_token_env):
        raise CurateError(f"--push needs a Hugging Face token in the environment variable {rcfg.hf_token_env}")
    out = export_hf(rs, ref, dest, fmt or rcfg.format, rcfg, repo_hint=push)
    console.print(f"release {rs.resolve(ref)} exported to {out}")
    if push:
        console.print(f"pushed: {push_to_hub(out, push, token_env=rcfg.hf_token_env, private=not public)}")


def register(app: typer.Typer) -> None:
    app.add_typer(release_app, name="release")
    app.add_typer(versions_app, name="versions")
    app.add_typer(export_app, name="export")
