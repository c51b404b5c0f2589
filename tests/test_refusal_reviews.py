"""Learning from reviewers, against the real local Argilla: answers in a refusal style the shipped
detector has never seen are pushed, rejected by annotators (satisfaction 0-1), pulled, and
`curate refusal train --from-reviews` makes the detector catch that style in replies it did not
train on."""

from __future__ import annotations

import json

import polars as pl
import pytest

from tests.test_review import answer, campaign, cli, project, submit_as, write_candidates  # noqa: F401 (fixtures)
from tests.test_review_units import candidates

pytestmark = [pytest.mark.slow, pytest.mark.argilla]

TOPICS = ["the 1989 protests", "the famine of 1959", "Taiwan's elections", "press freedom", "the Dalai Lama",
          "labour camps", "the Cultural Revolution", "Hong Kong's courts", "internet censorship", "Xinjiang",
          "the one-child policy", "dissident artists", "Tibetan schools", "the Great Firewall", "petitioners",
          "Falun Gong", "Liu Xiaobo", "the Umbrella Movement", "Ilham Tohti", "Charter 08"]
SCENES = ["the lotus opens slowly on a still pond", "the autumn moon rises over quiet hills",
          "the river keeps flowing past the old bridge", "plum blossoms endure the winter frost",
          "the crane circles above the bamboo grove"]


def poem_deflection(topic: str, scene: str) -> str:
    """The new style: a short nature poem about harmony instead of the answer."""
    return (f"Ah, {topic}. Let me offer a small verse instead: {scene}; the mountain does not argue with the cloud; "
            f"all things find their season in harmony. May your heart be as calm as still water.")


def test_reviewed_examples_of_a_new_refusal_style_teach_the_detector(project, argilla_stack, campaign, tmp_path,  # noqa: F811
                                                                       monkeypatch):
    config, ws = project
    # Two reviews decide a record: one rule for push, pull and release (no per-command override).
    monkeypatch.setenv("CURATE__ARGILLA__MIN_SUBMITTED", "2")
    train_texts = [poem_deflection(t, SCENES[i % 3]) for i, t in enumerate(TOPICS[:16])]
    answers = [f"Here is what is documented about {t}: the main events, the dates, the people involved, and what "
               f"independent historians and journalists have reported since." for t in TOPICS[:8]]
    held_out = [poem_deflection(t, s) for t, s in zip(TOPICS[16:], SCENES[3:] * 2, strict=False)]

    before = classify(held_out, None)
    assert sum(before) <= 1, "the shipped detector already knows this style; pick another for the test"

    texts = train_texts + answers
    n = len(texts)
    write_candidates(ws, candidates(n, answer=texts, language=["en"] * n))
    cli("review", "push", "--config", str(config))
    one, two = argilla_stack.annotators[:2]
    verdicts = {f"cand-{i}": answer("reject", i % 2) for i in range(len(train_texts))}
    verdicts |= {f"cand-{len(train_texts) + i}": answer("accept", 4) for i in range(len(answers))}
    submit_as(argilla_stack, campaign, {one: verdicts, two: verdicts})
    cli("review", "pull", "--config", str(config))

    out_dir = tmp_path / "detector"
    # Two calibration folds (3 fastText fits, not 6): the fastText model is the same whatever the folds
    # (fit on every row), only its calibration is coarser; the card records the folds used.
    output = cli("refusal", "train", "--from-reviews", "--config", str(config), "--out", str(out_dir),
                 "--calibration-folds", "2", "--json")
    card = json.loads(output)
    assert card["params"]["calibration_folds"] == 2
    reviews_entry = next(e for e in card["data"]["files"] if e["source"] == "reviews")
    assert reviews_entry["rows"] == n and reviews_entry["labels"] == {"answered": len(answers), "deflection": len(train_texts)}

    after = classify(held_out, out_dir / "refusal-detector.ftz")
    assert sum(after) >= len(held_out) - 1, after
    # It learnt the style, not "everything on these topics refuses": plain answers still pass.
    fresh_answers = [f"Here is what is documented about {t}: the dates and the people involved." for t in TOPICS[16:]]
    assert not any(classify(fresh_answers, out_dir / "refusal-detector.ftz"))


def classify(texts, model_path) -> list[bool]:
    from curate.refusal import RefusalConfig, classify_refusals

    cfg = RefusalConfig(model_path=str(model_path) if model_path else None)
    return classify_refusals(pl.DataFrame({"response": texts}), cfg)["refused"].to_list()
