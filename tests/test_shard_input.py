"""A sharded stage's input read shard by shard from its Parquet file: the same shards, outputs and
checkpoints as the table cut in memory, resumed the same way after a crash, and only a shard's
place (not its rows) handed to a task."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from curate.orchestrate import OrchestrationConfig, make_task_runner
from curate.shards import ParquetSlice, ShardCheckpoints, map_shards, shard_file, shard_frame
from tests.test_flows import harness, lang_frame, language_shard


def write_table(path: Path, df: pl.DataFrame, row_group_rows: int = 4) -> Path:
    # Row groups smaller than a shard and not aligned with it: a shard spans several groups.
    df.write_parquet(path, row_group_size=row_group_rows)
    return path


class CrashAt(Exception):
    pass


def checkpoint_files(checkpoints: ShardCheckpoints) -> dict[str, object]:
    """Every checkpoint file by its path under the folder: a table's rows, or a marker's JSON."""
    files: dict[str, object] = {}
    for path in sorted(p for p in checkpoints.folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(checkpoints.folder))
        files[name] = json.loads(path.read_text()) if path.suffix == ".json" else pl.read_parquet(path).to_dicts()
    return files


@pytest.mark.parametrize("rows", [0, 1, 9, 10, 23])
def test_shard_file_cuts_the_same_shards_as_the_frame(tmp_path, rows):
    df = lang_frame(rows)
    slices = shard_file(write_table(tmp_path / "t.parquet", df), 10)
    frames = shard_frame(df, 10)
    assert [(s.offset, s.rows) for s in slices] == [(i * 10, f.height) for i, f in enumerate(frames)]
    assert all(s.read().equals(f) for s, f in zip(slices, frames, strict=True))


@pytest.mark.parametrize("max_in_flight", [1, 3])
def test_map_shards_from_a_path_gives_the_frames_output_and_checkpoints(tmp_path, max_in_flight):
    df = lang_frame(23)
    path = write_table(tmp_path / "texts.parquet", df)
    by_frame = ShardCheckpoints(tmp_path / "frame" / ".shards" / "fp-5")
    by_path = ShardCheckpoints(tmp_path / "path" / ".shards" / "fp-5")
    seen: list[type] = []

    def recorded(texts: pl.DataFrame) -> object:
        seen.append(type(texts))
        return language_shard(texts)

    kw = {"shard_input": "texts", "shard_size": 5, "max_in_flight": max_in_flight, "stream_merge": True}
    expected = map_shards(recorded, df, checkpoints=by_frame, **kw)
    got = map_shards(recorded, path, checkpoints=by_path, **kw)
    assert seen == [pl.DataFrame] * 10  # the stage always gets rows, never the slice
    assert got.tables["langs"].collect().equals(expected.tables["langs"].collect())
    assert got.tables["langs"].collect()["i"].to_list() == list(range(23))
    assert got.report == expected.report
    files = checkpoint_files(by_path)
    assert sorted({name.split("/")[0] for name in files}) == [f"{i:06d}" for i in range(5)]
    assert files == checkpoint_files(by_frame)


def test_a_run_from_a_path_resumes_after_a_crash_with_the_finished_shards(tmp_path):
    df = lang_frame(30)
    path = write_table(tmp_path / "texts.parquet", df)
    checkpoints = ShardCheckpoints(tmp_path / ".shards" / "fp-10")
    calls: list[int] = []

    def crashes_at_20(texts: pl.DataFrame) -> object:
        calls.append(texts["i"][0])
        if texts["i"][0] == 20:
            raise CrashAt("injected")
        return language_shard(texts)

    with pytest.raises(CrashAt):
        map_shards(crashes_at_20, path, shard_input="texts", shard_size=10, checkpoints=checkpoints)
    assert [checkpoints.meta(i) is not None for i in range(3)] == [True, True, False]

    calls.clear()
    again = map_shards(lambda texts: (calls.append(texts["i"][0]), language_shard(texts))[1], path,
                       shard_input="texts", shard_size=10, checkpoints=checkpoints)
    assert calls == [20]  # only the shard that crashed runs again
    assert again.report["shards"] == {"total": 3, "resumed": 2, "shard_size": 10}
    assert again.tables["langs"].drop("worker").equals(language_shard(df).tables["langs"].drop("worker"))


def test_checkpoints_written_from_the_frame_are_resumed_from_the_path(tmp_path):
    """A run that checkpointed shards before input was read by path resumes them unchanged."""
    df = lang_frame(30)
    path = write_table(tmp_path / "texts.parquet", df)
    checkpoints = ShardCheckpoints(tmp_path / ".shards" / "fp-10")
    first = map_shards(language_shard, df, shard_input="texts", shard_size=10, checkpoints=checkpoints)
    (checkpoints.shard_dir(2) / "done.json").unlink()  # killed while writing the last shard
    calls: list[int] = []
    again = map_shards(lambda texts: (calls.append(texts["i"][0]), language_shard(texts))[1], path,
                       shard_input="texts", shard_size=10, checkpoints=checkpoints)
    assert calls == [20]
    assert again.tables["langs"].equals(first.tables["langs"])


class RecordingRunner:
    """A real Prefect task runner that notes what each shard task was handed."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.shards: list[object] = []

    def submit(self, task, parameters, **kwargs):
        self.shards.append(parameters["shard"])
        return self.runner.submit(task, parameters, **kwargs)


@harness
@pytest.mark.parametrize("read_in_worker", [True, False])
def test_a_shard_task_gets_the_shards_place_unless_its_worker_cannot_read_the_file(tmp_path, read_in_worker):
    from prefect import flow

    df = lang_frame(40)
    path = write_table(tmp_path / "texts.parquet", df)

    @flow
    def fan_out() -> tuple[pl.DataFrame, list[object]]:
        with make_task_runner(OrchestrationConfig(max_workers=2)) as runner:
            recording = RecordingRunner(runner)
            out = map_shards(language_shard, path, shard_input="texts", shard_size=10, runner=recording,
                             read_in_worker=read_in_worker, stage="langid")
            return out.tables["langs"], recording.shards

    out, shards = fan_out()
    assert out["i"].to_list() == list(range(40))
    kind = ParquetSlice if read_in_worker else pl.DataFrame
    assert [type(s) for s in shards] == [kind] * 4


# Dask workers reading their shards from the file: tests/test_flows.py, in the same cluster as the
# frame's shards (a cluster's start is most of such a test's time).


def test_sharded_stages_count_their_progress_from_a_scan_of_the_shard_input(tmp_path):
    from types import SimpleNamespace

    from curate.pipeline import CURATION, SAFETY
    from curate.stages.answers import STAGE as ANSWERS

    translations = pl.DataFrame({"translation_id": [f"t{i}" for i in range(7)],
                                 "status": ["ok", "ok", "error", "ok", "ok", "rejected", "ok"]})
    path = write_table(tmp_path / "translations.parquet", translations)
    settings = SimpleNamespace(candidates_per_prompt=4)
    assert ANSWERS.progress_total({"translations": pl.scan_parquet(path)}, settings) == 5 * 4
    assert ANSWERS.progress_total({"translations": translations}, settings) == 5 * 4
    # Every sharded stage's total works on a scan (the runner passes one), not only on a frame.
    settings = SimpleNamespace(candidates_per_prompt=2, judges=["a"], harm=True, target_languages=["zh", "ru"],
                               samples_per_seed=3)
    sharded = [s for s in (*CURATION, *SAFETY) if s.shard_by and s.progress_total]
    assert {s.name for s in sharded} >= {"blocked", "translate", "answers", "judge_score", "safety_answers"}
    for stage in sharded:
        scan = {stage.shard_by: pl.scan_parquet(path)}
        assert stage.progress_total(scan, settings) == stage.progress_total({stage.shard_by: translations}, settings)
