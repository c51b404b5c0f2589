"""`curate dedupe-file` (any JSONL/CSV/Parquet file) and the options and summary it shares with `curate dedupe`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.table import Table

from curate.cli.options import ConfigOpt, QuietOpt, console, err_console, get_config
from curate.errors import InputError
from curate.progress import progress_bar
from curate.rowfiles import read_rows
from curate.runner import stage_settings
from curate.stages.dedupe import STAGE as DEDUPE
from curate.stages.dedupe import PairVerifier, dedupe_frame
from curate.text.embeddings import curate_home
from curate.text.langid import detect_languages
from curate.workspace import atomic_write_json, atomic_write_parquet

ThresholdOpt = Annotated[float | None, typer.Option(help="Cosine similarity at or above which rows merge.")]
ModelOpt = Annotated[str | None, typer.Option(help="Embedding model: hub name, folder, 'minilm-bundled', 'embeddinggemma'.")]
KeepOpt = Annotated[str | None, typer.Option(help="Which row of a cluster to keep: first, longest, best.")]
CrossOpt = Annotated[bool | None, typer.Option("--cross-language/--within-language", help="Also match across languages.")]
ExactOpt = Annotated[bool, typer.Option("--exact-only", help="Only exact (normalized) duplicates; no model.")]
VerifyOpt = Annotated[bool | None, typer.Option("--verify/--no-verify",
                                                help="Ask the [llm] judge about pairs just below the threshold.")]


def _progress(quiet: bool):
    return None if quiet else progress_bar


def print_dedupe_summary(report: dict[str, Any], near: pl.DataFrame, show_pairs: int) -> None:
    stats = report.get("dedupe", {})
    console.print(
        f"  rows {stats.get('rows_in')} -> kept {stats.get('rows_kept')}: exact duplicates {stats.get('exact_duplicates')}, "
        f"semantic {stats.get('semantic_duplicates')}, embeddings computed {stats.get('embeddings_computed')} "
        f"(cached {stats.get('embeddings_cached')}), model {stats.get('model', '-')}"
    )
    if stats.get("kept_by_last_run"):
        console.print(f"  {stats['kept_by_last_run']} rows kept by the last run stay kept over rows new to this one")
    for lang, setting in sorted(stats.get("languages", {}).items()):
        band = f", verify from {setting['verify_above']}" if setting.get("verify_above") is not None else ""
        console.print(f"  {lang}: threshold {setting['threshold']}{band} ({setting['threshold_source']})"
                      + ("" if setting.get("semantic", True) else ", exact only"), highlight=False, markup=False)
    if stats.get("verified_pairs"):
        console.print(f"  verified pairs {stats['verified_pairs']}: same {stats.get('verified_same')}, "
                      f"different {stats.get('verified_different')}, errors {stats.get('verify_errors')}")
    if stats.get("empty_texts"):
        err_console.print(f"[yellow]note:[/] {stats['empty_texts']} empty or whitespace-only texts, never merged: "
                          f"{', '.join(stats.get('empty_text_ids', []))}", highlight=False)
    if stats.get("exact_only_languages"):
        err_console.print(f"[yellow]note:[/] exact dedupe only (model {stats.get('model')} does not cover them): "
                          f"{stats['exact_only_languages']}", highlight=False)
    if stats.get("model_warning"):
        err_console.print(f"[yellow]warning:[/] {stats['model_warning']}", highlight=False)
    if show_pairs and near.height:
        table = Table(title="pairs nearest the threshold (tune with --threshold)")
        for col in ("similarity", "merged", "language", "a", "b"):
            table.add_column(col)
        for row in near.head(show_pairs).iter_rows(named=True):
            table.add_row(f"{row['similarity']:.3f}", "yes" if row["merged"] else "no", row["a_language"],
                          (row["a_text"] or "")[:70], (row["b_text"] or "")[:70])
        console.print(table)


def read_table(path: Path) -> pl.DataFrame:
    """Any file curate ingests (JSONL, JSON, CSV/TSV, Parquet, datasets folder) as one frame."""
    if path.suffix.lower() == ".parquet" and path.is_file():
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # polars raises several types for corrupt files
            raise InputError(path, f"not a readable Parquet file: {exc}") from exc
    rows = [row for _, row in read_rows(path)]
    try:
        return pl.DataFrame(rows, infer_schema_length=None)
    except (TypeError, pl.exceptions.PolarsError) as exc:
        raise InputError(path, f"rows do not form a table (mixed value types in a column?): {exc}") from exc


def register(app: typer.Typer) -> None:
    @app.command("dedupe-file")
    def dedupe_file(
        source: Annotated[Path, typer.Argument(help="JSONL, JSON, CSV/TSV or Parquet file.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for deduped.parquet, clusters.parquet, "
                                          "pairs_near_threshold.parquet and report.json.")],
        text_col: Annotated[str, typer.Option(help="Column with the text.")] = "text",
        language_col: Annotated[str | None, typer.Option(help="Column with the language; none: one language.")] = None,
        group_col: Annotated[
            str | None, typer.Option(help="Rows sharing a value here never merge (translations of one question).")
        ] = None,
        id_col: Annotated[str | None, typer.Option(help="Column with a row id; none: row-<n>.")] = None,
        detect_language: Annotated[
            bool, typer.Option("--detect-language", help="Without --language-col: detect each row's language with fastText.")
        ] = False,
        config: ConfigOpt = None,
        threshold: ThresholdOpt = None,
        model: ModelOpt = None,
        keep: KeepOpt = None,
        score_col: Annotated[str | None, typer.Option(help="Column ranked by --keep best.")] = None,
        cross_language: CrossOpt = None,
        exact_only: ExactOpt = False,
        verify: VerifyOpt = None,
        cache_dir: Annotated[Path | None, typer.Option(help="Embedding cache (default: $CURATE_HOME/embeddings).")] = None,
        show_pairs: Annotated[int, typer.Option(help="Near-threshold pairs to print.")] = 5,
        quiet: QuietOpt = False,
    ) -> None:
        """De-duplicate any table of texts (exact, then semantic) and write the results to a folder."""
        cfg = get_config(config)
        stage_cfg = stage_settings(DEDUPE, cfg, {"threshold": threshold, "model": model, "keep": keep, "score_col": score_col,
                                                 "cross_language": cross_language, "semantic": False if exact_only else None,
                                                 "verify": verify})
        df = read_table(source)
        if detect_language and language_col is None:
            if text_col not in df.columns:
                raise InputError(source, "missing text column", field=text_col)
            languages, _ = detect_languages(df[text_col].to_list(), cfg.langid.model_path)
            language_col = "detected_language"
            df = df.with_columns(pl.Series(language_col, languages, dtype=pl.String))
        output = dedupe_frame(
            df, stage_cfg, text_col=text_col, language_col=language_col, group_col=group_col, id_col=id_col,
            cache_dir=cache_dir or curate_home() / "embeddings", progress=_progress(quiet), source=str(source),
            verifier=PairVerifier(stage_cfg.verifier, curate_home() / "llm-cache.sqlite")
            if stage_cfg.semantic and stage_cfg.verify and stage_cfg.verifier else None,
        )
        names = {"translations": "deduped", "clusters": "clusters", "pairs_near_threshold": "pairs_near_threshold",
                 "verifications": "verifications"}
        for table, frame in output.tables.items():
            atomic_write_parquet(out / f"{names[table]}.parquet", frame)
        atomic_write_json(out / "report.json", output.report | {"config": stage_cfg.model_dump(mode="json")})
        console.print(f"wrote {out}/deduped.parquet ({output.tables['translations'].height} rows), clusters.parquet, "
                      "pairs_near_threshold.parquet, report.json")
        print_dedupe_summary(output.report, output.tables["pairs_near_threshold"], show_pairs)

