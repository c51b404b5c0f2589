"""`curate detect-refusals`: the refusal detector over any file of responses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, NoCacheOpt, console, get_config
from curate.config import Config, EndpointConfig, stage_config
from curate.errors import CurateError, InputError
from curate.llm.cache import LLMCache
from curate.refusal import RefusalConfig, classify_refusals, describe_detector, evaluate_refusals
from curate.rowfiles import read_rows
from curate.workspace import atomic_write_bytes, atomic_write_parquet, atomic_write_text


def refusal_config(cfg: Config):
    return stage_config(cfg, "refusal", RefusalConfig)


# ---------------------------------------------------------------------------------------------
# detect-refusals
# ---------------------------------------------------------------------------------------------


def read_responses(path: Path, response_col: str) -> pl.DataFrame:
    """A JSONL/JSON/CSV/TSV/Parquet file of responses as a frame; bad rows raise InputError."""
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
    cfg = get_config(config)
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


def register(app: typer.Typer) -> None:
    app.command("detect-refusals")(detect_refusals)
