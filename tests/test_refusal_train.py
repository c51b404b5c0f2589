"""Training the refusal detector: the data guard (no reserved R1-family model), the manifest's
sha256s, reviews as labels, and `curate refusal train` rebuilding the shipped artefact bit for bit."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import CurateError, InputError
from curate.refusal.data import ALL_SOURCES, REPO_ROOT, RESERVED_MODEL, TRAIN_SOURCES, check_training_frame, load_sources
from curate.refusal.model import SHIPPED_MODEL, SHIPPED_SHA256, card_path
from curate.refusal.reviews import reviewed_labels
from curate.refusal.train import TrainParams, fit

R1_FAMILY = ["deepseek/deepseek-r1", "deepseek/deepseek-r1-0528", "deepseek/deepseek-r1-distill-llama-70b",
             "microsoft/mai-ds-r1:free", "perplexity/r1-1776", "tngtech/deepseek-r1t-chimera",
             "tngtech/deepseek-r1t2-chimera", "deepseek-r1"]
NOT_R1 = ["deepseek/deepseek-chat-v3-0324", "qwen/qwen3-14b", "openai/o1-preview-2024-09-12", "x-ai/grok-3-mini-beta",
          "refusal_eval/qwen2.5-coder-0.5b-instruct-q4_k_m"]


def test_reserved_model_names_are_recognised():
    assert all(RESERVED_MODEL.search(m) for m in R1_FAMILY)
    assert not any(RESERVED_MODEL.search(m) for m in NOT_R1)


def test_training_data_has_no_reserved_model_and_the_manifest_pins_every_file():
    df, manifest = load_sources(ALL_SOURCES)
    assert not df["model"].str.contains(RESERVED_MODEL.pattern).any()
    assert set(df["label"].unique()) == {"answered", "hard", "deflection", "official_line"}
    assert set(df.filter(pl.col("source") == "speechmap")["language"].unique()) == {"en", "zh", "fi"}
    for entry in manifest:
        assert hashlib.sha256((REPO_ROOT / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]
    # The two refusal_eval replies by DeepSeek-R1 are dropped, and its XSTest rows never train.
    eval_entry = next(e for e in manifest if e["source"] == "refusal_eval")
    assert eval_entry["reserved_dropped"] == 2
    assert not df.filter(pl.col("source") == "refusal_eval/tune")["question_id"].is_in(
        [r["id"] for r in map(json.loads, (REPO_ROOT / "data/refusal_eval/labeled.jsonl").read_text().splitlines())
         if r["source"].startswith("xstest") or r["split"] != "tune"]).any()
    card = json.loads(card_path(SHIPPED_MODEL).read_text(encoding="utf-8"))
    assert [e["sha256"] for e in card["data"]["files"]] == [e["sha256"] for e in load_sources(TRAIN_SOURCES)[1]]


def test_the_us_criticism_set_has_the_speechmap_models_and_stays_out_of_the_shipped_training():
    # Same model names as the main SpeechMap set, so folds grouped by model keep a model's replies
    # together; experiments only (docs/refusal-experiments.md, sixth round), never the shipped training data.
    df, manifest = load_sources(("speechmap", "speechmap_us"))
    us = df.filter(pl.col("source") == "speechmap_us")
    assert us.height == 1549 and set(us["language"].unique()) == {"en"}
    assert set(us["model"].unique()) == set(df.filter(pl.col("source") == "speechmap")["model"].unique())
    assert manifest[1]["reserved_dropped"] == 0  # the R1-family files were never copied
    assert "speechmap_us" not in TRAIN_SOURCES


def test_a_reserved_model_or_unknown_label_in_training_data_is_refused():
    row = {"source": "speechmap", "model": "deepseek/deepseek-r1", "question_id": "q", "language": "en",
           "text": "I cannot help.", "label": "hard"}
    with pytest.raises(InputError, match="R1-family model 'deepseek/deepseek-r1' is reserved"):
        check_training_frame(pl.DataFrame([row]), "training data")
    with pytest.raises(InputError, match="unknown label 'maybe'"):
        check_training_frame(pl.DataFrame([row | {"model": "m", "label": "maybe"}]), "training data")
    # Empty texts carry no signal and are dropped, not trained on.
    assert check_training_frame(pl.DataFrame([row | {"model": "m", "text": "  "}]), "x").height == 0


def test_reviews_become_labels_only_when_reviewers_agree():
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [  # candidate, annotator, accept, satisfaction, status
        ("refuses", "a", False, 0, "submitted"), ("refuses", "b", False, 1, "submitted"),
        ("answers", "a", True, 4, "submitted"), ("answers", "b", True, 3, "submitted"),
        ("poor", "a", False, 2, "submitted"),  # rejected but not as a refusal
        ("mixed", "a", False, 0, "submitted"), ("mixed", "b", True, 3, "submitted"),
        ("discarded", "a", False, 0, "discarded"),
    ]
    reviews = pl.DataFrame({"candidate_id": [r[0] for r in rows], "annotator": [r[1] for r in rows],
                            "accept": [r[2] for r in rows], "satisfaction": [r[3] for r in rows],
                            "status": [r[4] for r in rows], "updated_at": [t0] * len(rows)})
    assert dict(reviewed_labels(reviews).iter_rows()) == {"answers": "answered", "refuses": "deflection"}


def test_unknown_source_is_a_clear_error():
    result = CliRunner().invoke(app, ["refusal", "train", "--source", "nope"])
    assert isinstance(result.exception, CurateError) and "unknown training source(s) ['nope']" in str(result.exception)


def test_other_calibration_folds_never_overwrite_the_shipped_artefact():
    # The folds change only the card's calibration, so the rebuilt .ftz would still match the pinned sha256.
    shipped = (SHIPPED_MODEL.read_bytes(), card_path(SHIPPED_MODEL).read_bytes())
    result = CliRunner().invoke(app, ["refusal", "train", "--source", "xstest", "--calibration-folds", "2"])
    assert isinstance(result.exception, CurateError)
    assert "calibrated on 5 folds" in str(result.exception) and "--out" in str(result.exception)
    assert (SHIPPED_MODEL.read_bytes(), card_path(SHIPPED_MODEL).read_bytes()) == shipped
    too_few = CliRunner().invoke(app, ["refusal", "train", "--calibration-folds", "1", "--out", "unused"])
    assert too_few.exit_code == 2 and "--calibration-folds" in too_few.output


def test_fitting_the_same_rows_twice_gives_the_same_bytes(tmp_path):
    """Each training runs in a fresh process: in-process repeats of fastText are not deterministic."""
    df = check_training_frame(load_sources()[0], "x").filter(pl.col("source") == "refusal_eval/tune")
    params = TrainParams(epoch=3, quantize_cutoff=2000)
    first = fit(df, params, tmp_path / "a")
    second = fit(df, params, tmp_path / "b")
    third = fit(df, params, tmp_path / "c")
    assert first.read_bytes() == second.read_bytes() == third.read_bytes()
    assert not list(tmp_path.glob("*/*.train.txt")), "training text left behind"


def test_cross_validation_holds_out_whole_models_and_fits_side_by_side_as_one_after_another(tmp_path):
    """`curate refusal evaluate`'s folds: every row is scored by a model trained without any row of its
    own model, and running the fold fits side by side gives the same scores as one after another."""
    from curate.refusal.crossval import cross_validate

    df = load_sources(("xstest",))[0].filter(pl.int_range(pl.len()).over("model") < 60)
    params = TrainParams(epoch=3, quantize_cutoff=2000)
    serial = cross_validate(df, params, "model", tmp_path / "serial", folds=2, workers=1)
    parallel = cross_validate(df, params, "model", tmp_path / "parallel", folds=2, workers=2)
    assert serial.height == df.height and serial["p_raw"].is_not_nan().all()
    assert serial.group_by("model").agg(pl.col("fold").n_unique())["fold"].to_list() == [1] * df["model"].n_unique()
    assert serial["fold"].n_unique() == 2
    assert serial["p_raw"].to_list() == parallel["p_raw"].to_list()
    assert serial["pred_kind"].to_list() == parallel["pred_kind"].to_list()


@pytest.mark.slow
def test_train_rebuilds_the_shipped_artefact_bit_for_bit(tmp_path):
    result = CliRunner().invoke(app, ["refusal", "train", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "use it with [stages.refusal] model_path" in " ".join(result.output.split())
    built = tmp_path / SHIPPED_MODEL.name
    assert hashlib.sha256(built.read_bytes()).hexdigest() == SHIPPED_SHA256
    assert card_path(built).read_bytes() == card_path(SHIPPED_MODEL).read_bytes()
    assert not list(tmp_path.glob(".train-*")), "temporary training files left behind"
