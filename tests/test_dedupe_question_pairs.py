"""The question-shaped calibration data (bench/dedupe_calibration.py): split by question group,
never by pair; a wrong or damaged file is refused with its name and line; pooled picks weigh
each set by its share, not by its size."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from bench.dedupe_calibration import MQP_SHA256, best_recall, mqp_pairs, pick, pooled


def write_groups(path: Path, groups: int) -> None:
    # The file's shape (dr_id, question_1, question_2, label): per original question one
    # rewrite (1) and one related different question (0). Mechanics only, never thresholds.
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        for g in range(groups):
            writer.writerow([g % 3 + 1, f"original {g}?", f"rewrite of {g}?", 1])
            writer.writerow([g % 3 + 1, f"original {g}?", f"other question near {g}?", 0])


def test_dev_and_test_hold_whole_question_groups_and_never_share_a_question(tmp_path: Path) -> None:
    path = tmp_path / "mqp.csv"
    write_groups(path, 7)
    dev, test = mqp_pairs(path, "dev", sha256=None), mqp_pairs(path, "test", sha256=None)
    assert len(dev) == 8 and len(test) == 6  # groups 0,2,4,6 / 1,3,5, two pairs each
    for split in (dev, test):
        originals = {a for a, _, _ in split}
        for original in originals:  # each group keeps its paraphrase and its different question together
            assert sorted(dup for a, _, dup in split if a == original) == [False, True]
    texts = lambda pairs: {t for a, b, _ in pairs for t in (a, b)}  # noqa: E731
    assert not texts(dev) & texts(test)


def test_a_file_that_is_not_the_pinned_one_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "mqp.csv"
    write_groups(path, 2)
    with pytest.raises(SystemExit, match=rf"mqp.csv: sha256 .* is not the pinned {MQP_SHA256}"):
        mqp_pairs(path, "dev")
    with pytest.raises(SystemExit, match="not found; clone https://github.com/curai/medical-question-pair-dataset"):
        mqp_pairs(tmp_path / "missing.csv", "dev")


def test_a_damaged_row_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "mqp.csv"
    write_groups(path, 2)
    with open(path, "a", encoding="utf-8") as f:
        f.write("4,only a question,maybe\n")
    with pytest.raises(SystemExit, match=r"mqp.csv:5: expected dr_id,question_1,question_2,label"):
        mqp_pairs(path, "test", sha256=None)


def test_a_pooled_pick_weighs_each_set_by_its_share_not_its_size() -> None:
    # Set A: 1,000 different pairs all at 0.70; set B: 10 different pairs at 0.9006. By size B is
    # 1% of the pool (under the 5% allowance, so the threshold could sit at 0.70); by share
    # (half each) B's pairs are 50% of the weight, so the threshold must rise above them.
    a = (np.r_[np.full(1000, 0.70), np.full(100, 0.95)], np.r_[np.zeros(1000, bool), np.ones(100, bool)])
    b = (np.r_[np.full(10, 0.9006), np.full(10, 0.95)], np.r_[np.zeros(10, bool), np.ones(10, bool)])
    sims, labels, weights = pooled([a, b], [0.5, 0.5])
    assert weights[:1100].sum() == pytest.approx(0.5) and weights[1100:].sum() == pytest.approx(0.5)
    threshold, verify_above = pick(sims, labels, weights)
    assert threshold > 0.9006 and verify_above <= threshold
    by_size = pick(sims, labels, np.ones(sims.size))[0]
    assert by_size < 0.9006  # weighed by size, set B's different pairs would merge


def test_best_recall_is_measured_where_five_percent_of_different_pairs_merge() -> None:
    different = np.linspace(0.0, 0.99, 100)  # the 6th highest is 0.94: 5 of 100 merge above it
    paraphrases = np.array([0.93, 0.945, 0.96, 0.99])
    sims = np.r_[different, paraphrases]
    labels = np.r_[np.zeros(100, bool), np.ones(4, bool)]
    assert best_recall(sims, labels) == pytest.approx(0.75)


def test_the_docs_table_shows_the_thresholds_the_calibration_table_ships() -> None:
    import tomllib

    from curate.stages.dedupe.calibration import TABLE

    table = tomllib.loads(TABLE.read_text(encoding="utf-8"))["models"]
    docs = (Path(__file__).resolve().parent.parent / "docs" / "dedupe.md").read_text(encoding="utf-8")
    rows = [line.split("|") for line in docs.splitlines() if line.startswith("| google/embeddinggemma-300m")]
    assert rows, "docs/dedupe.md has no calibration row for EmbeddingGemma"
    entry = table["google/embeddinggemma-300m"]
    assert float(rows[0][3]) == entry["threshold"] and float(rows[0][4]) == entry["verify_above"]
    sources = (Path(__file__).resolve().parent.parent / "data" / "paraphrase_public" / "SOURCE.md").read_text("utf-8")
    for lang, value in entry["languages"].items():  # every language's source names a set SOURCE.md describes
        assert "STS-B" in value["source"] and "stsb_multi_mt" in sources, lang
        if "Medical Question Pairs" in value["source"]:
            assert "curai/medical-question-pair-dataset" in sources and lang == "en", lang
