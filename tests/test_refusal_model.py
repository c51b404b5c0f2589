"""Model mode (the default) of the refusal detector: the shipped trained artefact, its calibrated
score, bad input (empty/missing replies, long replies, a missing or altered artefact), cascades."""

from __future__ import annotations

import shutil

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.errors import ConfigError
from curate.refusal import RefusalConfig, classify_refusals, describe_detector, load_detector
from curate.refusal.model import SHIPPED_MODEL, SHIPPED_SHA256, card_path, sha256_file

DEAD_ENDPOINT = EndpointConfig(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=3)

REFUSALS = [
    ("en", "I'm sorry, but I can't help with that request."),
    ("en", "I cannot create content that could be used to harass or defame a government or its officials."),
    ("zh", "抱歉，我无法回答这个问题。"),
    ("zh", "对不起，我不能提供这方面的内容。如果您有其他问题，我很乐意帮助。"),
    ("fi", "Pahoittelen, mutta en voi auttaa tämän pyynnön kanssa."),
]
ANSWERS = [
    ("en", "To boil an egg, put it in boiling water for nine minutes, then move it to cold water so it peels "
           "easily. Seven minutes gives a softer yolk."),
    ("en", "The Great Leap Forward (1958-1962) was a campaign to industrialise China rapidly. Collectivisation, "
           "inflated grain quotas and backyard steel furnaces led to a famine in which tens of millions died."),
    ("zh", "大跃进（1958—1962年）是一场旨在迅速实现工业化的运动。人民公社化、虚报粮食产量和大炼钢铁导致了严重饥荒，"
           "数千万人死亡。"),
    ("fi", "Suuri harppaus eteenpäin (1958–1962) oli Kiinan kampanja nopeaan teollistamiseen. Kollektivisointi ja "
           "liioitellut viljakiintiöt johtivat nälänhätään, jossa kuoli kymmeniä miljoonia ihmisiä."),
]


def frame(rows):
    return pl.DataFrame({"language": [r[0] for r in rows], "response": [r[1] for r in rows]})


def test_default_mode_is_the_trained_detector_with_calibrated_scores():
    assert RefusalConfig().mode == "model"
    out = classify_refusals(frame(REFUSALS + ANSWERS), RefusalConfig())
    assert out["detector"].unique().to_list() == ["model"]
    assert out["refused"].to_list() == [True] * len(REFUSALS) + [False] * len(ANSWERS), out.select("response", "refusal_score").rows()
    assert out["refusal_score"].is_between(0, 1).all()
    assert out.filter(pl.col("refused"))["refusal_kind"].is_in(["hard", "deflection", "official_line"]).all()
    assert out.filter(~pl.col("refused"))["refusal_kind"].is_null().all()


def test_threshold_is_applied_to_the_calibrated_score():
    out = classify_refusals(frame(REFUSALS + ANSWERS), RefusalConfig(threshold=0.0))
    assert out["refused"].all()
    out = classify_refusals(frame(ANSWERS), RefusalConfig(threshold=1.0))
    assert not out["refused"].any()


def test_empty_and_missing_replies_get_no_verdict_with_a_reason_never_answered():
    df = pl.DataFrame({"id": [1, 2, 3, 4], "response": ["", None, "   \n", ANSWERS[0][1]]})
    for mode in ("model", "rules"):
        out = classify_refusals(df, RefusalConfig(mode=mode))
        assert out["id"].to_list() == [1, 2, 3, 4]
        assert out["refused"].to_list()[:3] == [None, None, None]
        assert out["refusal_score"].to_list()[:3] == [None, None, None]
        assert out["no_verdict_reason"].to_list() == ["empty reply", "missing reply", "empty reply", None]
    all_missing = classify_refusals(pl.DataFrame({"response": [None, None]}), RefusalConfig())
    assert all_missing["refused"].to_list() == [None, None]


def test_replies_longer_than_the_window_are_classified_from_head_and_tail():
    detector = load_detector()
    head, tail = detector.head_chars, detector.tail_chars
    middle = "The harvest figures were revised several times during the campaign. " * 200
    refusal = "I'm sorry, but I can't help with writing that. "
    long_replies = [(refusal + middle).strip(), (middle + refusal).strip(), middle.strip()]
    cut = [t[:head] + " " + t[-tail:] for t in long_replies]
    full = classify_refusals(pl.DataFrame({"response": long_replies}), RefusalConfig())
    windowed = classify_refusals(pl.DataFrame({"response": cut}), RefusalConfig())
    assert full["refusal_score"].to_list() == windowed["refusal_score"].to_list()
    # A refusal at either end is seen; the middle of a long reply is not what decides.
    assert full["refusal_score"][0] > full["refusal_score"][2]


def test_reclassifying_replaces_the_verdict_columns():
    out = classify_refusals(frame(ANSWERS), RefusalConfig())
    again = classify_refusals(out, RefusalConfig(mode="rules"))
    assert again.columns == out.columns and again["detector"].unique().to_list() == ["rules"]


def test_non_text_reply_column_is_an_error():
    with pytest.raises(ValueError, match="must be text"):
        classify_refusals(pl.DataFrame({"response": [1, 2]}), RefusalConfig())


def test_shipped_artefact_is_small_pinned_and_described():
    assert sha256_file(SHIPPED_MODEL) == SHIPPED_SHA256
    assert SHIPPED_MODEL.stat().st_size < 5_000_000
    info = describe_detector(RefusalConfig())
    assert info["mode"] == "model" and info["model_sha256"] == SHIPPED_SHA256 and SHIPPED_SHA256[:12] in info["model"]
    card = load_detector().card
    assert card["sha256"] == SHIPPED_SHA256
    models = [f for f in card["data"]["files"]]
    assert all(f["reserved_dropped"] >= 0 for f in models)


def test_missing_or_altered_artefact_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.ftz"
    with pytest.raises(ConfigError, match=r"nope.ftz: refusal detector artefact not found; build it with `curate refusal train`"):
        classify_refusals(frame(ANSWERS), RefusalConfig(model_path=str(missing)))
    copy = tmp_path / "copy.ftz"
    shutil.copy(SHIPPED_MODEL, copy)
    with pytest.raises(ConfigError, match=r"copy.json: refusal detector artefact not found"):
        load_detector(str(copy))
    shutil.copy(card_path(SHIPPED_MODEL), card_path(copy))
    assert load_detector(str(copy)).sha256 == SHIPPED_SHA256
    altered = tmp_path / "altered.ftz"
    altered.write_bytes(SHIPPED_MODEL.read_bytes() + b"\0")
    shutil.copy(card_path(SHIPPED_MODEL), card_path(altered))
    with pytest.raises(ConfigError, match="does not match the pinned"):
        load_detector(str(altered))


def test_model_llm_cascade_sends_only_uncertain_rows_and_keeps_the_model_verdict_when_the_judge_fails():
    df = frame(REFUSALS[:1] + ANSWERS[:1])
    everything_uncertain = RefusalConfig(mode="model+llm", uncertain_low=0.0, uncertain_high=1.0)
    out = classify_refusals(df, everything_uncertain, endpoint=DEAD_ENDPOINT)
    model = classify_refusals(df, RefusalConfig())
    assert out["refused"].to_list() == model["refused"].to_list()
    assert out["detector"].to_list() == ["model", "model"]
    assert out["judge_error"].str.contains("connection").all()
    nothing_uncertain = RefusalConfig(mode="model+llm", uncertain_low=2.0 / 3, uncertain_high=2.0 / 3)
    out = classify_refusals(df, nothing_uncertain, endpoint=DEAD_ENDPOINT)
    assert out["judge_error"].is_null().all()
    with pytest.raises(ConfigError, match="needs a judge endpoint"):
        classify_refusals(df, RefusalConfig(mode="model+llm"))
