"""`curate refusal train` and `curate refusal evaluate`: build and measure the trained detector."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.table import Table
from curate.cli.options import ConfigOpt, console
from curate.config import load_config, stage_config
from curate.errors import CurateError
from curate.refusal.crossval import cross_validate, report
from curate.refusal.data import ALL_SOURCES, TRAIN_SOURCES, check_training_frame, load_sources
from curate.refusal.model import ARTEFACT_DIR, ARTEFACT_NAME, SHIPPED_SHA256, load_detector
from curate.refusal.reviews import reviews_training_rows
from curate.refusal.train import TrainParams, train_detector
from curate.review.config import ReviewConfig
from curate.workspace import Workspace, atomic_write_text

refusal_app = typer.Typer(help="Train and measure the refusal detector.", no_args_is_help=True)

SHIPPED_FOLDS = TrainParams.model_fields["calibration_folds"].default
SourcesOpt = Annotated[list[str] | None, typer.Option("--source", help=f"Training sources (repeatable; default {list(TRAIN_SOURCES)}).")]


def _sources(sources: list[str] | None) -> tuple[str, ...]:
    chosen = tuple(sources or TRAIN_SOURCES)
    unknown = sorted(set(chosen) - set(ALL_SOURCES))
    if unknown:
        raise CurateError(f"unknown training source(s) {unknown}; expected some of {list(ALL_SOURCES)}")
    return chosen


@refusal_app.command("train")
def train(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: the shipped artefact folder; "
                                             "with --from-reviews: <workspace>/refusal/detector).")] = None,
    from_reviews: Annotated[bool, typer.Option("--from-reviews", help="Add the workspace's pulled Argilla reviews (review/reviews).")] = False,
    sources: SourcesOpt = None,
    held_out: Annotated[Path | None, typer.Option(help="Also write the calibration's out-of-fold predictions "
                                                  "(held out by model) as Parquet, for `curate refusal report`.")] = None,
    calibration_folds: Annotated[int, typer.Option(min=2, help="Model-grouped folds of the out-of-fold calibration "
                                                   "(folds + 1 fits; fewer is quicker, the calibration coarser).")] = SHIPPED_FOLDS,
    config: ConfigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the model card as JSON.")] = False,
) -> None:
    """Train the detector (fixed seed, one thread): the same data gives the same bytes."""
    cfg = load_config(config) if from_reviews else None
    out = out or (cfg.workspace_path / "refusal" / "detector" if cfg else ARTEFACT_DIR)
    if calibration_folds != SHIPPED_FOLDS and out.resolve() == ARTEFACT_DIR.resolve():
        # The folds change the card's calibration, not the .ftz: a rebuild would still match the pinned sha256.
        raise CurateError(f"{ARTEFACT_DIR}: the shipped artefact is calibrated on {SHIPPED_FOLDS} folds; "
                          f"write a detector with --calibration-folds {calibration_folds} elsewhere (--out)")
    df, manifest = load_sources(_sources(sources))
    if cfg is not None:
        ws = Workspace(cfg.workspace_path)
        review_cfg = stage_config(cfg, "review", ReviewConfig)
        reviewed, entry = reviews_training_rows(ws, review_cfg.source)
        if reviewed.height == 0:
            raise CurateError(f"{entry['path']}: no candidate has agreeing reviews to learn from "
                              "(needs all-reject with satisfaction 0-1, or all-accept)")
        df = pl.concat([df, reviewed])
        manifest.append(entry)
    card = train_detector(df, manifest, out, TrainParams(calibration_folds=calibration_folds), held_out_out=held_out)
    if as_json:
        typer.echo(json.dumps(card, indent=1, ensure_ascii=False))
        return
    model_file = out / f"{ARTEFACT_NAME}.ftz"
    console.print(f"wrote {model_file} ({card['size_bytes']:,} bytes, sha256 {card['sha256']}) and its card; "
                  f"{card['data']['rows']:,} training rows; out-of-fold accuracy {card['out_of_fold']['accuracy_at_0.5']}")
    if out.resolve() == ARTEFACT_DIR.resolve():
        same = card["sha256"] == SHIPPED_SHA256
        console.print("matches the pinned sha256" if same else f"[yellow]differs from the pinned sha256 {SHIPPED_SHA256}[/]")
    else:
        # markup=False: rich would read "[stages.refusal]" as a style tag and print nothing of it.
        console.print(f'use it with [stages.refusal] model_path = "{model_file}"', markup=False)


@refusal_app.command("evaluate")
def evaluate(
    split: Annotated[str, typer.Option(help="model (whole models held out) | question (whole questions) | language (one language held out).")] = "model",
    folds: Annotated[int, typer.Option(help="Folds for model/question splits; 0 with --split model: leave one model out.")] = 5,
    sources: SourcesOpt = None,
    only: Annotated[str | None, typer.Option(help="Score only rows of this source (others still train every fold).")] = None,
    language: Annotated[str | None, typer.Option(help="Score only rows of this language.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the report as JSON.")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Write held-out predictions as Parquet.")] = None,
) -> None:
    """Held-out figures: train without each fold, score it, report per language, label and model."""
    if split not in ("model", "question", "language"):
        raise CurateError(f"--split must be 'model', 'question' or 'language', not {split!r}")
    df = check_training_frame(load_sources(_sources(sources))[0], "training data")
    # Opening-sentence views train but are not replies: figures are on real replies only.
    mask = ~df["source"].str.ends_with("/opening").to_numpy()
    if only:
        mask &= (df["source"] == only).to_numpy()
    if language:
        mask &= (df["language"] == language).to_numpy()
    if not mask.any():
        raise CurateError(f"no rows with source {only!r} and language {language!r} to score")
    calibration = load_detector().card["calibration"]
    with tempfile.TemporaryDirectory(prefix="refusal-cv-") as tmp:
        pred = cross_validate(df, TrainParams(), split, Path(tmp), folds=folds, test_mask=mask,
                              calibration=(calibration["x"], calibration["y"]),
                              progress=lambda f: console.print(f"fold {f} done", highlight=False))
    if predictions:
        pred.write_parquet(predictions)
    _print_report({"split": split, "folds": folds, "only": only, "language": language, **report(pred)}, out)


@refusal_app.command("report")
def report_predictions(
    predictions: Annotated[Path, typer.Argument(help="Held-out predictions (from `train --held-out` or `evaluate --predictions`).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the report as JSON.")] = None,
) -> None:
    """Per-language, per-label, per-source and per-model figures of saved held-out predictions (real replies only)."""
    if not predictions.is_file():
        raise CurateError(f"{predictions}: no such predictions file")
    pred = pl.read_parquet(predictions).filter(~pl.col("source").str.ends_with("/opening") & pl.col("p_refusal").is_not_null())
    _print_report({"predictions": str(predictions), **report(pred)}, out)


def _print_report(result: dict, out: Path | None) -> None:
    if out:
        atomic_write_text(out, json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    for key in ("overall", "by_language", "by_label", "by_source", "by_model"):
        table = Table(title=key)
        columns = list(result[key][0]) if result[key] else []
        for col in columns:
            table.add_column(col)
        for row in result[key]:
            table.add_row(*("-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()))
        console.print(table)
    console.print(f"kind agreement on caught refusals: {result['kind_agreement']}")


def register(app: typer.Typer) -> None:
    app.add_typer(refusal_app, name="refusal")
