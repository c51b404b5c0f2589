"""Thresholds come from the per-model calibration table; the report says per language which
model and threshold applied; empty texts are reported and never merged."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import polars as pl
import pytest

from curate.config import DEFAULT_LANGUAGES
from curate.stages.dedupe import DedupeConfig, calibration_for, dedupe_frame, embeddinggemma_path, language_settings
from curate.stages.dedupe.calibration import TABLE, LanguageSetting
from curate.stages.dedupe.device import prompt_name_for
from curate.stages.dedupe.embed import ResolvedModel
from curate.stages.dedupe.semantic import partition_setting


def test_every_calibrated_model_names_its_public_source() -> None:
    table = tomllib.loads(TABLE.read_text(encoding="utf-8"))
    assert "default" in table and table["models"]
    for name, entry in table["models"].items():
        assert 0 < entry["verify_above"] <= entry["threshold"] < 1, name
        assert entry["source"] and "team" not in entry["source"], name
        for lang, value in entry.get("thresholds", {}).items():
            assert 0 < value < 1, (name, lang)
        for lang, value in entry.get("languages", {}).items():
            assert 0 < value["verify_above"] <= value["threshold"] < 1, (name, lang)
            assert "dev" in value["source"] or "even rows" in value["source"], (name, lang)  # picked on held-in data


def test_report_names_each_languages_own_calibration_or_the_model_wide_one() -> None:
    cal = calibration_for("google/embeddinggemma-300m")
    calibrated = [lang for lang in DEFAULT_LANGUAGES if cal.language_calibrated(lang)]
    assert calibrated == list(DEFAULT_LANGUAGES)  # STS-B multi-MT, KorSTS, Multilingual-STSB
    settings = language_settings(calibrated, cal.model, threshold=None, verify=True, verify_above=None)
    for lang, setting in settings.items():
        assert setting.calibrated and setting.threshold == cal.thresholds[lang]
        assert setting.verify_above == min(cal.verify_floors[lang], setting.threshold)
        report = setting.as_report()
        assert report["calibrated_for_language"] is True and f"] {lang}: " in report["threshold_source"]


def test_a_language_without_public_data_gets_the_model_wide_threshold_and_says_so() -> None:
    cal = calibration_for("google/embeddinggemma-300m")
    settings = language_settings(["ko", "vi", "und"], cal.model, threshold=None, verify=False, verify_above=None)
    assert settings["ko"].calibrated and settings["ko"].threshold == cal.thresholds["ko"]
    for lang in ("vi", "und"):  # Vietnamese: no public set here; und: language unknown
        assert not settings[lang].calibrated and settings[lang].threshold == cal.threshold
        assert f"model-wide ({lang} not calibrated)" in settings[lang].source
        assert settings[lang].as_report()["calibrated_for_language"] is False
    # A configured threshold is nobody's calibration.
    pinned = language_settings(["ko"], cal.model, threshold=0.95, verify=False, verify_above=None)
    assert not pinned["ko"].calibrated and pinned["ko"].source == "config"


def test_a_model_missing_from_the_table_gets_the_default_and_says_so() -> None:
    cal = calibration_for("some-org/unknown-model")
    assert not cal.calibrated and cal.model == "default"
    settings = language_settings(["en"], "some-org/unknown-model", threshold=None, verify=False, verify_above=None)
    assert "not calibrated" in settings["en"].source
    pinned = language_settings(["en", "zh"], "google/embeddinggemma-300m", threshold=0.93, verify=True, verify_above=None)
    assert {s.threshold for s in pinned.values()} == {0.93} and pinned["en"].source == "config"
    assert pinned["en"].verify_above is not None and pinned["en"].verify_above <= 0.93


@pytest.mark.slow
def test_report_names_model_and_threshold_per_language() -> None:
    df = pl.DataFrame({
        "translation_id": ["a", "b", "c", "d"], "question_id": ["q1", "q2", "q3", "q4"],
        "language": ["en", "en", "zh", "en"],
        "text": ["Who was the Tank Man?", "Who was the man who stood in front of the tanks?", "谁是坦克人？", "   "],
    })
    out = dedupe_frame(df, DedupeConfig(model="minilm-bundled"), id_col="translation_id")
    report = out.report["dedupe"]
    cal = calibration_for("sentence-transformers/all-MiniLM-L6-v2")
    assert report["languages"]["en"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert report["languages"]["en"]["threshold"] == cal.threshold_for("en")
    assert cal.language_sources["en"] in report["languages"]["en"]["threshold_source"]
    assert report["languages"]["en"]["calibrated_for_language"] is True
    assert report["languages"]["zh"]["semantic"] is False  # English-only model: exact only
    assert report["empty_texts"] == 1 and report["empty_text_ids"] == ["d"]


@pytest.mark.parametrize("blank", ["", "   ", "\t\n", "？！", None])
def test_empty_texts_are_reported_and_never_merged(blank) -> None:
    df = pl.DataFrame({"translation_id": ["a", "b", "c"], "question_id": ["q1", "q2", "q3"], "language": ["en"] * 3,
                       "text": [blank, blank, "What is the Great Firewall?"]}, schema_overrides={"text": pl.String})
    out = dedupe_frame(df, DedupeConfig(semantic=False), id_col="translation_id")
    clusters = out.tables["clusters"]
    assert clusters["cluster_id"].to_list() == ["a", "b", "c"]
    assert out.report["dedupe"]["empty_texts"] == 2 and out.report["dedupe"]["empty_text_ids"] == ["a", "b"]


def test_each_partition_gets_its_own_languages_threshold() -> None:
    settings = {"en": LanguageSetting("m", 0.8, None, "s"), "zh": LanguageSetting("m", 0.9, None, "s")}
    assert partition_setting(pl.DataFrame({"_lang": ["zh", "zh"]}), settings).threshold == 0.9
    assert partition_setting(pl.DataFrame({"_lang": ["en"]}), settings).threshold == 0.8
    # A cross-language partition merges no language more loosely than it was calibrated for.
    assert partition_setting(pl.DataFrame({"_lang": ["en", "zh"]}), settings).threshold == 0.9


def test_dtype_follows_the_device_unless_set() -> None:
    from curate.stages.dedupe.device import resolved_dtype

    assert resolved_dtype(DedupeConfig(), "cpu") == "float32"  # half precision is slower on CPUs
    assert resolved_dtype(DedupeConfig(), "cuda:0") == "float16"
    assert resolved_dtype(DedupeConfig(dtype="bfloat16"), "cuda:0") == "bfloat16"
    assert resolved_dtype(DedupeConfig(dtype="float32"), "cuda") == "float32"


def test_the_calibrated_prompt_applies_unless_configured_and_is_one_the_model_has() -> None:
    gemma = ResolvedModel(path=Path("unused"), name="google/embeddinggemma-300m", key="k")
    calibrated = calibration_for(gemma.name).prompt_name
    assert calibrated and prompt_name_for(DedupeConfig(), gemma) == calibrated
    assert prompt_name_for(DedupeConfig(prompt_name="STS"), gemma) == "STS"  # config wins
    # A model without a calibrated prompt embeds raw text.
    other = ResolvedModel(path=Path("unused"), name="some-org/unknown-model", key="k")
    assert prompt_name_for(DedupeConfig(), other) is None
    config = embeddinggemma_path() / "config_sentence_transformers.json"
    if config.is_file():  # assembled by scripts/setup.sh: the calibrated prompt must be one of its own
        assert calibrated in json.loads(config.read_text(encoding="utf-8"))["prompts"]
