"""Flows under Prefect's test harness: stage skip, shard fan-out and resume, task-runner choice,
the LLM concurrency limit, and a real Dask LocalCluster with two workers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config
from curate.errors import ConfigError, CurateError
from curate.orchestrate import OrchestrationConfig, make_task_runner, orchestration_config, partitions_as_tasks
from curate.shards import ShardCheckpoints, map_shards, shard_frame
from curate.text.langid import detect_languages
from curate.workspace import StageOutput, Workspace


def harness(test):
    """Runs under the session's embedded Prefect server (a server start: slow)."""
    return pytest.mark.slow(pytest.mark.usefixtures("prefect_harness")(test))


LANG_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "天安门广场发生了什么事情？",
    "¿Qué pasó en la plaza de Tiananmen en 1989?",
    "Что произошло на площади Тяньаньмэнь?",
    "Was geschah auf dem Platz des Himmlischen Friedens?",
    "Qu'est-ce qui s'est passé sur la place Tiananmen ?",
]


def language_shard(texts: pl.DataFrame) -> StageOutput:
    """A real CPU stage (fastText language ID) that records which Dask worker ran it, if any."""
    langs, confs = detect_languages(texts["text"].to_list())
    try:
        from distributed import get_worker

        worker = get_worker().address
    except (ImportError, ValueError):
        worker = "local"
    time.sleep(0.05)  # long enough that both workers of a cluster get shards
    out = texts.with_columns(language=pl.Series(langs, dtype=pl.String), confidence=pl.Series(confs), worker=pl.lit(worker))
    return StageOutput(tables={"langs": out}, report={"rows": texts.height, "by": {"n": texts.height}, "note": "x"})


def lang_frame(n: int) -> pl.DataFrame:
    return pl.DataFrame({"i": range(n), "text": [LANG_TEXTS[i % len(LANG_TEXTS)] for i in range(n)]})


def write_config(tmp_path: Path, seeds: list[Path], **orchestrate: object) -> Path:
    lines = [
        f'workspace = "{tmp_path / "ws"}"',
        'languages = ["en", "zh"]',
        "[stages.orchestrate]",
        f"seeds = {[str(s) for s in seeds]!r}".replace("'", '"'),
    ]
    orchestrate.setdefault("skip", ["blocked"])
    for key, value in orchestrate.items():
        lines.append(f"{key} = {value!r}".replace("'", '"') if not isinstance(value, bool) else f"{key} = {str(value).lower()}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "curate.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- plain helpers ------------------------------------------------------------------------------------
def test_shard_frame_is_contiguous_and_stable():
    df = lang_frame(25)
    shards = shard_frame(df, 10)
    assert [s.height for s in shards] == [10, 10, 5]
    assert pl.concat(shards).equals(df)
    assert all(a.equals(b) for a, b in zip(shards, shard_frame(df, 10), strict=True))
    assert [s.height for s in shard_frame(df.head(0), 10)] == [0]
    with pytest.raises(ConfigError):
        shard_frame(df, 0)


def test_map_shards_without_prefect_matches_the_whole_frame_and_merges_reports():
    df = lang_frame(23)
    whole = language_shard(df).tables["langs"]
    out = map_shards(language_shard, df, shard_input="texts", shard_size=5, stage="langid")
    assert out.tables["langs"].drop("worker").equals(whole.drop("worker"))
    assert out.report["rows"] == 23 and out.report["by"] == {"n": 23} and out.report["note"] == "x"
    assert out.report["shards"] == {"total": 5, "resumed": 0, "shard_size": 5}


def test_map_shards_resumes_from_checkpoints_and_recomputes_only_missing_shards(tmp_path):
    df = lang_frame(30)
    checkpoints = ShardCheckpoints(tmp_path / ".shards" / "fp")
    calls: list[int] = []

    def counted(texts: pl.DataFrame) -> StageOutput:
        calls.append(texts.height)
        return language_shard(texts)

    first = map_shards(counted, df, shard_input="texts", shard_size=10, checkpoints=checkpoints)
    assert len(calls) == 3
    # A shard whose done-marker is missing (killed while writing it) counts as not done.
    (checkpoints.shard_dir(1) / "done.json").unlink()
    calls.clear()
    again = map_shards(counted, df, shard_input="texts", shard_size=10, checkpoints=checkpoints)
    assert len(calls) == 1
    assert again.report["shards"]["resumed"] == 2
    assert again.tables["langs"].equals(first.tables["langs"])
    assert again.tables["langs"]["i"].to_list() == list(range(30))


def test_task_runner_choice_by_config(tmp_path):
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(make_task_runner(OrchestrationConfig()), ThreadPoolTaskRunner)
    assert isinstance(make_task_runner(OrchestrationConfig(task_runner="processes", max_workers=2)), ProcessPoolTaskRunner)
    remote = make_task_runner(OrchestrationConfig(task_runner="dask", dask_address="tcp://127.0.0.1:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"
    local = make_task_runner(OrchestrationConfig(task_runner="dask", max_workers=3))
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["dashboard_address"] is None

    bad = write_config(tmp_path, [], task_runner="spark")
    with pytest.raises(ConfigError, match="stages.orchestrate.task_runner"):
        orchestration_config(load_config(bad))
    typo = write_config(tmp_path / "typo", [], skip=["blockd"])
    with pytest.raises(ConfigError, match="cannot skip.*blockd"):
        orchestration_config(load_config(typo))


# -- flows under the harness --------------------------------------------------------------------------
@harness
def test_curation_flow_runs_then_skips_everything_unchanged(tmp_path, deccp_censored):
    from flows.curation import curation_flow

    cfg = write_config(tmp_path, [deccp_censored])
    first = curation_flow(str(cfg), until="keywords")
    assert [s["stage"] for s in first] == ["ingest", "keywords"]
    assert not any(s["skipped"] for s in first)
    assert first[0]["rows"] == {"seeds": 95, "rejects": 0}
    second = curation_flow(str(cfg), until="keywords")
    assert all(s["skipped"] for s in second)
    ws = Workspace(tmp_path / "ws")
    # The keywords stage read the ingested seeds, because blocked detection is skipped by config.
    assert ws.manifest("keywords")["inputs"]["seeds"] == ws.manifest("ingest")["outputs"]["seeds"]["sha256"]
    runs = sorted((tmp_path / "ws" / "runs").glob("*.json"))
    assert len(runs) == 2


def test_curate_run_rejects_bad_arguments_before_any_flow_run(tmp_path, deccp_censored):
    cfg = write_config(tmp_path, [deccp_censored])
    runner = CliRunner()
    result = runner.invoke(app, ["run", "-c", str(cfg), "--until", "nonsense"])
    assert isinstance(result.exception, CurateError) and "unknown stage 'nonsense'" in str(result.exception)

    empty = write_config(tmp_path / "none", [])
    result = runner.invoke(app, ["run", "-c", str(empty)])
    assert isinstance(result.exception, CurateError) and "no seed files" in str(result.exception)
    assert not (tmp_path / "ws").exists()


@harness
def test_bad_seed_file_fails_the_flow_naming_file_and_line_and_writes_nothing(tmp_path):
    from flows.curation import curation_flow

    bad_seed = tmp_path / "bad.jsonl"
    bad_seed.write_text('{"prompt": "ok"}\n{"prompt": \n', encoding="utf-8")
    cfg = write_config(tmp_path, [bad_seed])
    with pytest.raises(CurateError, match="bad.jsonl:2"):
        curation_flow(str(cfg))
    assert Workspace(tmp_path / "ws").manifest("ingest") is None


@harness
def test_llm_concurrency_limit_is_shared_by_concurrent_holders(tmp_path):
    from prefect import flow

    from curate.orchestrate import ensure_llm_limit, llm_slot

    cfg = OrchestrationConfig(llm_limit_name=f"test-llm-{tmp_path.name}", llm_slots=1)
    spans: list[tuple[float, float]] = []

    def llm_stage() -> None:
        with llm_slot(cfg.llm_limit_name):
            start = time.monotonic()
            time.sleep(0.3)
            spans.append((start, time.monotonic()))

    @flow
    def two_stages_at_once() -> None:
        ensure_llm_limit(cfg)
        threads = [threading.Thread(target=llm_stage) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    two_stages_at_once()
    (a_start, a_end), (b_start, _) = sorted(spans)
    # One slot: the second holder waited for the first to let go.
    assert b_start >= a_end - 0.01


@harness
def test_map_shards_keeps_at_most_max_in_flight_shards_running():
    from prefect import flow

    running, peak = 0, 0
    overlap = threading.Condition()

    def tracked(rows: pl.DataFrame) -> dict[str, pl.DataFrame]:
        nonlocal running, peak
        with overlap:
            running += 1
            peak = max(peak, running)
            overlap.notify_all()
            # Hold the shard until two have run at once: on a loaded machine a 0.1 s shard may
            # otherwise finish before the next starts, and peak == 1 would say nothing about the bound.
            overlap.wait_for(lambda: peak >= 2, timeout=60)
        time.sleep(0.1)  # work, giving a runner that ignores the bound time to start more shards
        with overlap:
            running -= 1
        return {"rows": rows}

    @flow
    def bounded() -> pl.DataFrame:
        with make_task_runner(OrchestrationConfig(max_workers=4)) as runner:
            return map_shards(tracked, lang_frame(8), shard_input="rows", shard_size=1, runner=runner, max_in_flight=2).tables["rows"]

    assert bounded()["i"].to_list() == list(range(8))
    assert peak == 2


@harness
@pytest.mark.timeout(240)
def test_dask_local_cluster_with_two_workers_fans_out_language_id_from_a_frame_and_from_a_file(tmp_path):
    """One cluster (its two worker processes are most of this test's time) for both inputs: shards
    cut from a frame in memory, and shards each worker reads from a Parquet file by their place."""
    from prefect import flow

    # Worker processes, the default. The in-process variant (dask_processes=False) was seen to wait
    # forever on its futures when run after other tests in the same session; see docs/orchestration.md.
    cfg = OrchestrationConfig(task_runner="dask", max_workers=2, dask_processes=True)
    df = lang_frame(400)
    path = tmp_path / "texts.parquet"
    # Row groups smaller than a shard and not aligned with it: a shard spans several groups.
    df.write_parquet(path, row_group_size=64)

    @flow
    def fan_out() -> tuple[pl.DataFrame, pl.DataFrame]:
        with make_task_runner(cfg) as runner:
            from_frame = map_shards(language_shard, df, shard_input="texts", shard_size=40, runner=runner, stage="langid")
            from_file = map_shards(language_shard, path, shard_input="texts", shard_size=40, runner=runner, stage="langid")
            return from_frame.tables["langs"], from_file.tables["langs"]

    expected, _ = detect_languages(df["text"].to_list())
    for out in fan_out():
        assert out["i"].to_list() == list(range(400))
        assert out["language"].to_list() == expected
        assert out["worker"].n_unique() == 2


@harness
def test_dedupe_partitions_fanned_out_as_tasks_match_the_library_stage(tmp_path):
    from prefect import flow

    from curate.stages.dedupe import DedupeConfig, dedupe_stage

    def dedupe_fanned_out(translations, config, *, cache_dir, runner):
        orch = OrchestrationConfig(max_workers=2)
        return dedupe_stage(translations, config, cache_dir=cache_dir, map_partitions=partitions_as_tasks(runner, orch, "dedupe"))

    texts = {
        "en": ["What happened at Tiananmen Square in 1989?", "What happened in Tiananmen Square in 1989?",
               "Who is the Panchen Lama?", "How are Uyghurs treated in Xinjiang?"],
        "zh": ["1989年天安门广场发生了什么？", "1989年天安门广场上发生了什么？", "班禅喇嘛是谁？"],
    }
    rows = [
        {"translation_id": f"t{lang}{i}", "question_id": f"q{i}", "text": t, "language": lang, "status": "ok"}
        for lang, items in texts.items() for i, t in enumerate(items)
    ]
    translations = pl.DataFrame(rows + [{**rows[0], "translation_id": "bad", "status": "flagged"}])
    # Both languages semantically, so both partitions fan out (the bundled model is English-only
    # and would leave Chinese to exact matching by default).
    config = DedupeConfig(model="minilm-bundled", threshold=0.9, semantic_languages=["en", "zh"])
    expected = dedupe_stage(translations, config, cache_dir=tmp_path / "emb")

    @flow
    def fanned() -> object:
        with make_task_runner(OrchestrationConfig(max_workers=2)) as runner:
            return dedupe_fanned_out(translations, config, cache_dir=tmp_path / "emb", runner=runner)

    got = fanned()
    assert got.report["dedupe"]["fanned_out_partitions"] == 2
    for table in ("translations", "clusters", "pairs_near_threshold"):
        assert got.tables[table].equals(expected.tables[table]), table
    assert got.tables["translations"].height < translations.height - 1  # something was deduplicated

    english_only = DedupeConfig(model="minilm-bundled", threshold=0.9)
    expected = dedupe_stage(translations, english_only, cache_dir=tmp_path / "emb")

    @flow
    def fanned_english_only() -> object:
        with make_task_runner(OrchestrationConfig(max_workers=2)) as runner:
            return dedupe_fanned_out(translations, english_only, cache_dir=tmp_path / "emb", runner=runner)

    got = fanned_english_only()
    assert got.report["dedupe"]["exact_only_languages"] == expected.report["dedupe"]["exact_only_languages"]
    for table in ("translations", "clusters", "pairs_near_threshold"):
        assert got.tables[table].equals(expected.tables[table]), table
