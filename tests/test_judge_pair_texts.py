"""The choosing judge writes its preference pairs batch by batch when it is given files (as the
runner gives them): the same rows, in the same order, as the pairs built in memory, whatever the
batch sizes; nothing half-written when it fails.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from bench.judge_choose_memory import scored_for
from bench.release_workspace import write_candidates
from curate.judge import pair_texts
from curate.judge.config import JudgeConfig, NamedJudge
from curate.stages.judge import judge_stage

CONFIG = JudgeConfig(judges=[NamedJudge(name="local", model="smollm2")])


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    # 600 candidates: duplicated ids, null and blank answers, null prompts, rejected refusals.
    candidates = tmp_path / "candidates.parquet"
    write_candidates(candidates, 600, edge_cases=True)
    scored = tmp_path / "scored.parquet"
    scored_for(pl.scan_parquet(candidates)).sink_parquet(scored)
    rejects = tmp_path / "rejects.parquet"
    pl.read_parquet(candidates).filter(pl.col("status") == "rejected").write_parquet(rejects, row_group_size=7)
    no_reasoning = tmp_path / "rejects_no_reasoning.parquet"
    pl.read_parquet(rejects).drop("reasoning").write_parquet(no_reasoning)
    return {"candidates": candidates, "scored": scored, "rejects": rejects, "no_reasoning": no_reasoning}


def preferences(output) -> pl.DataFrame:
    table = output.tables["preferences"]
    return pl.read_parquet(table) if isinstance(table, Path) else table


@pytest.mark.parametrize("rejects", ["rejects", "no_reasoning"])
def test_pairs_written_in_small_batches_equal_the_pairs_built_in_memory(files, rejects, monkeypatch):
    in_memory = judge_stage(pl.read_parquet(files["scored"]), pl.read_parquet(files["candidates"]), CONFIG,
                            rejects=pl.read_parquet(files[rejects]))
    expected = preferences(in_memory)
    assert expected.height > 100
    assert (expected["rejected_source"] != "judged").sum() > 0  # filtered refusals are among the pairs
    # Batches of 7 pairs and read batches of 5 candidates: pairs cross every boundary.
    monkeypatch.setattr(pair_texts, "PAIR_BATCH", 7)
    monkeypatch.setattr(pair_texts, "READ_ROWS", 5)

    streamed = judge_stage(files["scored"], files["candidates"], CONFIG, rejects=files[rejects])

    assert isinstance(streamed.tables["preferences"], Path)
    got = preferences(streamed)
    assert got.schema == expected.schema
    assert got.equals(expected)
    assert streamed.report["preference_pairs"] == in_memory.report["preference_pairs"] == expected.height
    assert streamed.tables["judgments"].equals(in_memory.tables["judgments"])
    if rejects == "no_reasoning":
        assert got.filter(pl.col("rejected_source") != "judged")["rejected_reasoning"].is_null().all()
    else:
        assert got["rejected"].is_not_null().all()
    # Nothing left beside the candidates but the finished pairs file.
    assert sorted(p.name for p in files["candidates"].parent.iterdir() if p.name.startswith(".judge")) == [
        streamed.tables["preferences"].name]


def test_a_failed_write_leaves_no_pairs_file_and_no_scratch(files, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(pair_texts, "with_pair_texts", fail)
    with pytest.raises(OSError, match="No space left"):
        judge_stage(files["scored"], files["candidates"], CONFIG, rejects=files["rejects"])
    assert not [p for p in files["candidates"].parent.iterdir() if p.name.startswith(".judge")]
