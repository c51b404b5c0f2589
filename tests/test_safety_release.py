"""Mixing the safety flow's selected rows into a release: per-source counts and how each source was
answered and filtered in the manifest and the dataset card; multi-turn rows export as messages."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from curate.config import load_config
from curate.errors import CurateError, InputError
from curate.release import MixSource, ReleaseStore, create_release, format_rows
from curate.release.export import export_hf
from curate.release.table_mix import rows_from_table
from curate.workspace import Workspace
from tests.test_release_helpers import make_workspace, write_table

FILTERED_BY = "inverse filter: (test)"


def selected_frame() -> pl.DataFrame:
    """What safety_filter/selected holds, for three subsets; one row is a conversation."""
    rows = []
    for i, (subset, category) in enumerate([("harmbench", "chemical_biological"), ("harmbench", "illegal"),
                                            ("xstest", "homonyms"), ("conv", None)]):
        prompt = f"SYNTHETIC safety prompt {i}"
        messages = [{"role": "user", "content": prompt}]
        if subset == "conv":
            messages = [{"role": "user", "content": "SYNTHETIC first turn"},
                        {"role": "assistant", "content": "SYNTHETIC first reply"}, *messages]
        rows.append({
            "candidate_id": f"scand-{i}", "prompt_id": f"safety-{i}", "subset": subset, "category": category,
            "expected": "benign" if subset == "xstest" else "harmful", "language": "en", "prompt": prompt,
            "messages": messages, "reasoning": f"SYNTHETIC reasoning {i}", "answer": f"SYNTHETIC answer {i}",
            "model": "r1-test", "filtered_by": FILTERED_BY, "candidates_generated": 2, "score": 0.9,
        })
    return pl.DataFrame(rows)


def _config(tmp_path: Path, amount: str) -> Path:
    mix = f'\n[[stages.release.mix]]\nname = "safety"\ntable = "safety_filter/selected"\n{amount}\n'
    return make_workspace(tmp_path, extra_config=mix)


def test_release_mixes_the_selected_safety_rows_with_per_source_lineage(tmp_path):
    config = _config(tmp_path, "count = 4")
    write_table(Workspace(tmp_path / "ws"), "safety_filter", {"selected": selected_frame()})
    result = create_release(load_config(config))
    [mix] = result.manifest["mixes"]
    assert mix["table"] == "safety_filter/selected" and mix["taken"] == 4
    assert mix["taken_by_subset"] == {"conv": 1, "harmbench": 2, "xstest": 1}
    assert mix["answered_by"] == ["r1-test"] and mix["filtered_by"] == [FILTERED_BY]
    assert mix["multi_turn"] == 1
    assert result.manifest["by_source"]["safety/harmbench"] == 2

    rows = ReleaseStore(tmp_path / "store").read(result.version)
    safety = rows.filter(pl.col("source").str.starts_with("safety/"))
    assert sorted(safety["candidate_id"]) == [f"scand-{i}" for i in range(4)]  # lineage to the chosen candidate
    assert set(safety["topic"].drop_nulls()) == {"chemical_biological", "illegal", "homonyms"}

    messages = format_rows(safety, "messages")
    conv = messages.filter(pl.col("source") == "safety/conv")["messages"].to_list()[0]
    assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant"]
    assert conv[0]["content"] == "SYNTHETIC first turn" and "SYNTHETIC reasoning 3" in conv[-1]["content"]
    single = messages.filter(pl.col("source") == "safety/xstest")["messages"].to_list()[0]
    assert [m["role"] for m in single] == ["user", "assistant"]
    assert "context" not in messages.columns

    card = (export_hf(ReleaseStore(tmp_path / "store"), result.version, tmp_path / "hf", "messages") / "README.md").read_text()
    assert "answered by r1-test" in card and FILTERED_BY in card
    assert "| harmbench | 2 | 2 |" in card and "1 rows are multi-turn" in card


def test_ratio_mix_counts_against_curated_rows_and_a_missing_table_is_a_clear_error(tmp_path):
    config = _config(tmp_path, "ratio = 0.5")
    with pytest.raises(CurateError, match="run `curate run --flow safety` first"):
        create_release(load_config(config))
    write_table(Workspace(tmp_path / "ws"), "safety_filter", {"selected": selected_frame()})
    result = create_release(load_config(config))
    [mix] = result.manifest["mixes"]
    assert mix["requested"] == round(0.5 * result.manifest["by_source"]["curate"]) == mix["taken"]


def test_mix_source_needs_exactly_one_of_path_or_table_and_a_complete_table():
    with pytest.raises(ValueError, match="exactly one of path or table"):
        MixSource(name="s", count=1)
    with pytest.raises(InputError, match="lacks column"):
        rows_from_table(MixSource(name="s", table="safety_filter/selected", count=1), pl.DataFrame({"prompt": ["x"]}))


def review_frame_rows() -> pl.DataFrame:
    """What safety_filter/review holds: an unjudged decline for a prompt the filter did not answer
    (s-fail), an unsure best for another (s-unsure), and an unjudged row of a prompt the filter
    already answered (s-dup, prompt safety-0)."""
    base = selected_frame().row(0, named=True)
    rows = []
    for cid, prompt_id, reason in (("s-fail", "safety-10", "harm_judge_failed"), ("s-unsure", "safety-11", "uncertain_best"),
                                   ("s-nobody", "safety-12", "harm_judge_failed"), ("s-dup", "safety-0", "harm_judge_failed")):
        rows.append({**base, "candidate_id": f"cand-{cid}", "prompt_id": prompt_id, "prompt": f"SYNTHETIC {cid}",
                     "messages": [{"role": "user", "content": f"SYNTHETIC {cid}"}], "answer": f"SYNTHETIC answer {cid}",
                     "candidate_index": 0, "review_reason": reason})
    return pl.DataFrame(rows).drop("filtered_by", "candidates_generated", "score")


def test_safety_review_rows_enter_a_release_only_with_a_persons_accept(tmp_path):
    from tests.test_release_helpers import FIRST_REVIEWS, review, set_reviews

    config = _config(tmp_path, "count = 6")
    write_table(Workspace(tmp_path / "ws"), "safety_filter", {"selected": selected_frame(), "review": review_frame_rows()})
    people = [review("s-fail", "ann1", True), review("s-unsure", "ann1", False), review("s-dup", "ann1", True)]
    set_reviews(tmp_path, [*FIRST_REVIEWS, *people])
    result = create_release(load_config(config))
    [mix] = result.manifest["mixes"]
    # s-fail: its harm judgment failed and a person accepted it; s-unsure was rejected, s-nobody has
    # no review, s-dup's prompt already has the filter's row.
    assert mix["eligible_by_release_path"] == {"filter": 4, "review": 1}
    rows = ReleaseStore(tmp_path / "store").read(result.version)
    safety = rows.filter(pl.col("source").str.starts_with("safety/"))
    assert sorted(safety["candidate_id"]) == ["cand-s-fail", *[f"scand-{i}" for i in range(4)]]
    card = (export_hf(ReleaseStore(tmp_path / "store"), result.version, tmp_path / "hf", "messages") / "README.md").read_text()
    assert "4 chosen by the filter, 1 accepted by\nreviewers" in card

    # A draft (pending rows allowed) still never releases an unreviewed safety review row.
    draft = create_release(load_config(config), draft=True)
    drafted = ReleaseStore(tmp_path / "store").read(draft.version).filter(pl.col("source").str.starts_with("safety/"))
    assert "cand-s-nobody" not in drafted["candidate_id"].to_list()
    assert "cand-s-fail" in drafted["candidate_id"].to_list()
