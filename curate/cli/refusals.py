"""`curate detect-refusals`, `curate blocked` and `curate answers`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, ForceOpt, NoCacheOpt, QuietOpt, console
from curate.config import Config, EndpointConfig, load_config, stage_config
from curate.errors import CurateError, InputError
from curate.workspace import Workspace, atomic_write_bytes, atomic_write_parquet, atomic_write_text


def _with_default_endpoint(cfg: Config, stage: str, key: str) -> dict[str, Any]:
    """The stage's settings, its endpoint filled in from [llm] where the stage leaves it unset."""
    raw = dict(cfg.stages.get(stage, {}))
    raw[key] = cfg.llm.model_dump() | dict(raw.get(key, {}))
    # One refusal detector for every caller: [stages.refusal], with the stage's own keys on top.
    raw["refusal"] = dict(cfg.stages.get("refusal", {})) | dict(raw.get("refusal", {}))
    if "judge" in raw and raw["judge"] is not None:
        raw["judge"] = cfg.llm.model_dump() | dict(raw["judge"])
    return raw


def blocked_config(cfg: Config):
    from curate.stages.blocked import BlockedConfig

    return stage_config(cfg.model_copy(update={"stages": cfg.stages | {"blocked": _with_default_endpoint(cfg, "blocked", "target")}}), "blocked", BlockedConfig)


def answers_config(cfg: Config):
    from curate.stages.answers import AnswersConfig

    raw = _with_default_endpoint(cfg, "answers", "generator")
    raw.setdefault("langid", cfg.langid.model_dump())
    return stage_config(cfg.model_copy(update={"stages": cfg.stages | {"answers": raw}}), "answers", AnswersConfig)


def refusal_config(cfg: Config):
    from curate.refusal import RefusalConfig

    return stage_config(cfg, "refusal", RefusalConfig)


# ---------------------------------------------------------------------------------------------
# detect-refusals
# ---------------------------------------------------------------------------------------------


def read_responses(path: Path, response_col: str) -> pl.DataFrame:
    """A JSONL/JSON/CSV/TSV/Parquet file of responses as a frame; bad rows raise InputError."""
    from curate.stages.ingest import read_rows

    rows = list(read_rows(path))
    if not rows:
        raise InputError(path, "file is empty: no responses found")
    for line, row in rows:
        if response_col not in row:
            raise InputError(path, f"missing (columns: {list(row)}); choose one with --response-col", line=line, field=response_col)
        value = row[response_col]
        if value is not None and not isinstance(value, str):
            raise InputError(path, f"expected text, got {type(value).__name__}", line=line, field=response_col)
    try:
        return pl.DataFrame([r for _, r in rows], infer_schema_length=None)
    except (pl.exceptions.PolarsError, TypeError, ValueError) as exc:
        raise InputError(path, f"rows do not share one column layout: {exc}") from exc


def gold_labels(df: pl.DataFrame) -> list[pl.Series] | None:
    """Hand labels if the file has them: a `label` object with `refused` (and `kind`), or
    `label_refused` (and `label_kind`) columns."""
    if "label" in df.columns and isinstance(df.schema["label"], pl.Struct):
        fields = [f.name for f in df.schema["label"].fields]
        if "refused" in fields:
            gold = [df["label"].struct.field("refused").cast(pl.Boolean).alias("gold_refused")]
            if "kind" in fields:
                gold.append(df["label"].struct.field("kind").cast(pl.String).alias("gold_kind"))
            return gold
    if "label_refused" in df.columns:
        gold = [df["label_refused"].cast(pl.Boolean).alias("gold_refused")]
        if "label_kind" in df.columns:
            gold.append(df["label_kind"].cast(pl.String).alias("gold_kind"))
        return gold
    return None


def _write_frame(df: pl.DataFrame, out: Path) -> None:
    suffix = out.suffix.lower()
    if suffix == ".parquet":
        atomic_write_parquet(out, df)
    elif suffix == ".csv":
        nested = [c for c, t in df.schema.items() if isinstance(t, pl.Struct | pl.List)]
        flat = df.with_columns(
            pl.col(c).map_elements(lambda v: json.dumps(v, ensure_ascii=False, default=str), return_dtype=pl.String)
            for c in nested
        )
        atomic_write_text(out, flat.write_csv())
    elif suffix in (".jsonl", ".ndjson"):
        atomic_write_bytes(out, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in df.iter_rows(named=True)).encode())
    else:
        raise CurateError(f"{out}: unsupported output type '{suffix}' (use .jsonl, .csv or .parquet)")


def _metrics_table(title: str, metrics: dict[str, dict[str, Any]]) -> Table:
    table = Table(title=title)
    table.add_column("subset", overflow="fold", max_width=34)
    # tp/fp/fn/tn are in --json; the table keeps what fits a terminal.
    columns = {"n": "n", "accuracy": "acc", "precision": "P", "recall": "R", "f1": "F1", "kind_agreement": "kind", "undecided": "undec"}
    for header in columns.values():
        table.add_column(header, justify="right")
    for name, m in metrics.items():
        fmt = lambda v: "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
        table.add_row(name, *(fmt(m.get(k)) for k in columns))
    return table


def detect_refusals(
    file: Annotated[Path, typer.Argument(help="JSONL / JSON / CSV / TSV / Parquet with one response per row.")],
    mode: Annotated[str | None, typer.Option(help="model | rules | llm | model+llm | rules+llm (default: [stages.refusal] mode or model).")] = None,
    response_col: Annotated[str, typer.Option(help="Column with the model's reply.")] = "response",
    prompt_col: Annotated[str, typer.Option(help="Column with the question (used by the judge).")] = "prompt",
    language_col: Annotated[str, typer.Option(help="Column with the language code.")] = "language",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write rows with verdicts (.jsonl, .csv, .parquet).")] = None,
    split: Annotated[str | None, typer.Option(help="Only rows whose `split` column has this value.")] = None,
    rules: Annotated[Path | None, typer.Option(help="Rule patterns TOML (default: [stages.refusal] rules_path or the bundled file).")] = None,
    model: Annotated[Path | None, typer.Option(help="Trained detector .ftz (default: [stages.refusal] model_path or the shipped one).")] = None,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary (and metrics) as JSON.")] = False,
    no_cache: NoCacheOpt = False,
) -> None:
    """Classify responses as refusals or answers; with hand labels in the file, report precision/recall."""
    from curate.refusal import RefusalConfig, classify_refusals, describe_detector, evaluate_refusals

    cfg = load_config(config)
    rcfg: RefusalConfig = refusal_config(cfg)
    if mode or rules or model:
        rcfg = RefusalConfig.model_validate(
            rcfg.model_dump() | ({"mode": mode} if mode else {}) | ({"rules_path": str(rules)} if rules else {})
            | ({"model_path": str(model)} if model else {}))
    df = read_responses(file, response_col)
    if split is not None:
        if "split" not in df.columns:
            raise InputError(file, "no `split` column to filter on", field="split")
        df = df.filter(pl.col("split") == split)
    endpoint = None
    cache = None
    if rcfg.uses_llm:
        from curate.llm import LLMCache

        endpoint = EndpointConfig.model_validate(cfg.llm.model_dump() | dict(cfg.stages.get("refusal_judge", {})))
        cache = None if no_cache else LLMCache.for_workspace(cfg.workspace_path)
    result = classify_refusals(df, rcfg, endpoint=endpoint, cache=cache, response_col=response_col,
                               prompt_col=prompt_col, language_col=language_col)
    summary: dict[str, Any] = {
        "rows": result.height,
        "mode": rcfg.mode,
        "detector": describe_detector(rcfg),
        "refused": int(result["refused"].fill_null(False).sum()),
        "undecided": int(result["refused"].is_null().sum()),
        "by_kind": {str(k): int(n) for k, n in result.group_by("refusal_kind").len().sort("refusal_kind", nulls_last=True).iter_rows()},
    }
    gold = gold_labels(result)
    if gold is not None:
        scored = result.with_columns(gold)
        groups = {"all": scored}
        for col in ("split", "source", "language", "model"):
            if col in scored.columns:
                for value in sorted(scored[col].drop_nulls().unique().to_list()):
                    groups[f"{col}={value}"] = scored.filter(pl.col(col) == value)
        summary["metrics"] = {name: evaluate_refusals(part) for name, part in groups.items()}
    if out is not None:
        _write_frame(result, out)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
        return
    console.print(f"{file}: {summary['rows']} rows, detector {summary['detector'].get('model', rcfg.mode)}: {summary['refused']} refused, "
                  f"{summary['undecided']} undecided; by kind {summary['by_kind']}")
    if "metrics" in summary:
        console.print(_metrics_table(f"refusal detector vs hand labels ({rcfg.mode})", summary["metrics"]))
    if out is not None:
        console.print(f"wrote {out}")


# ---------------------------------------------------------------------------------------------
# stages
# ---------------------------------------------------------------------------------------------


def _print_result(result) -> None:
    state = "[yellow]skipped (unchanged)[/]" if result.skipped else "[green]done[/]"
    rows = ", ".join(f"{t}={n}" for t, n in result.rows.items())
    console.print(f"{result.stage}: {state} {rows}")


def blocked(config: ConfigOpt = None, force: ForceOpt = False, no_cache: NoCacheOpt = False, quiet: QuietOpt = False) -> None:
    """Send ingested seeds to the target model; keep the ones it refuses (blocked/probes, blocked/seeds)."""
    from curate.llm import LLMCache
    from curate.progress import progress_bar
    from curate.stages.blocked import blocked_stage

    cfg = load_config(config)
    bcfg = blocked_config(cfg)
    ws = Workspace(cfg.workspace_path)
    total = ws.read("ingest/seeds").height * bcfg.samples_per_seed
    with ws.locked(), LLMCache.for_workspace(ws.root) as cache, progress_bar("blocked", total, enabled=not quiet) as advance:
        result = ws.run_stage("blocked", blocked_stage, inputs={"seeds": "ingest/seeds"}, config=bcfg,
                              force=force or no_cache, cache=cache, progress=advance, refresh=no_cache)
    _print_result(result)


def answers(
    config: ConfigOpt = None,
    input_table: Annotated[str | None, typer.Option("--input", help="Translations table (default: dedupe/translations if present, else translate/translations).")] = None,
    force: ForceOpt = False,
    no_cache: NoCacheOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Sample K answers with reasoning per translated question and filter them (answers/candidates, answers/rejects)."""
    from curate.llm import LLMCache
    from curate.progress import progress_bar
    from curate.stages.answers import answers_stage

    cfg = load_config(config)
    acfg = answers_config(cfg)
    ws = Workspace(cfg.workspace_path)
    if input_table is None:
        input_table = "dedupe/translations" if ws.manifest("dedupe") else "translate/translations"
    translations = ws.read(input_table)
    total = translations.filter(pl.col("status") == "ok").height * acfg.candidates_per_prompt
    with ws.locked(), LLMCache.for_workspace(ws.root) as cache, progress_bar("answers", total, enabled=not quiet) as advance:
        result = ws.run_stage("answers", answers_stage, inputs={"translations": input_table}, config=acfg,
                              force=force or no_cache, cache=cache, progress=advance, refresh=no_cache, prices=cfg.prices)
    _print_result(result)


def register(app: typer.Typer) -> None:
    app.command("detect-refusals")(detect_refusals)
    app.command("blocked")(blocked)
    app.command("answers")(answers)
