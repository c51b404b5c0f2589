"""`curate answers` from the CLI runs the way a flow runs it: sharded, checkpointed as shards land,
resumable after `kill -9`, and merged in input order from the shard files.

The endpoint for the kill and the failed-call tests is tests/fault_server.py, a STAND-IN (fault
injector) with a fixed latency, so a run is still going when it is killed, and so the test can
count on the server side which requests were sent again. The same CLI path against the real
llama.cpp server is the last test.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.ids import content_id
from curate.records import Translation, conform
from curate.shards import SHARDS_DIR, DONE, ShardCheckpoints, map_shards
from curate.workspace import StageOutput, Workspace
from tests.fault_server import FaultConfig, FaultServer
from tests.polling import wait_for

REPLY = "reasoning:The user asks a factual question, so I recall the history.|Here is what is known about it."
ANSWER = REPLY.split("|")[1]


def questions(n: int) -> pl.DataFrame:
    texts = [f"What happened in the town square in year {1900 + i}?" for i in range(n)]
    qids = [content_id("q", t, "kw") for t in texts]
    return conform(pl.DataFrame({
        "translation_id": [content_id("tr", t, "en", q) for t, q in zip(texts, qids, strict=True)],
        "question_id": qids, "source_language": ["en"] * n, "language": ["en"] * n, "text": texts, "status": ["ok"] * n,
    }), Translation)


def write_config(root: Path, base_url: str, *, shard_size: int, slots: int, concurrency: int, model: str = "m",
                 timeout_s: float = 30, answers: str = "") -> None:
    (root / "curate.toml").write_text(
        f'workspace = "ws"\n[llm]\nbase_url = "{base_url}"\nmodel = "{model}"\nmax_concurrency = {concurrency}\n'
        f'max_retries = 0\ntimeout_s = {timeout_s}\n'
        f'[stages.answers]\ncandidates_per_prompt = 1\nrequire_reasoning = false\n{answers}'
        f'[stages.orchestrate]\nshard_size = {shard_size}\nllm_slots = {slots}\n', encoding="utf-8")


def shard_folder(ws: Workspace) -> Path:
    return ws.stage_dir("answers") / SHARDS_DIR


def finished_shards(ws: Workspace) -> list[Path]:
    return sorted(p.parent for p in shard_folder(ws).glob(f"*/*/{DONE}"))


def answered_ids(shard: Path) -> set[str]:
    return {tid for name in ("candidates", "rejects") for tid in pl.read_parquet(shard / f"{name}.parquet")["translation_id"]}


def curate_answers(root: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATE__")}
    return subprocess.Popen([sys.executable, "-m", "curate", "answers", "--quiet"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_cli_answers_killed_with_sigkill_resumes_from_its_shard_checkpoints(tmp_path):
    n, shard_size = 36, 3  # 12 shards, two in flight at a time, ~1 s each: the run is killed part way
    ws = Workspace(tmp_path / "ws")
    translations = questions(n)
    ws.run_stage("translate", lambda: StageOutput(tables={"translations": translations}))
    with FaultServer(FaultConfig(plans={"": [REPLY]}, reply=ANSWER, latency_s=1.0)) as server:
        write_config(tmp_path, server.base_url, shard_size=shard_size, slots=2, concurrency=2 * shard_size)
        proc = curate_answers(tmp_path)

        def running() -> None:
            if proc.poll() is not None:
                raise AssertionError(f"curate answers ended before it was killed:\n{proc.stdout.read()}")

        wait_for(lambda: len(finished_shards(ws)) >= 2, "two shard checkpoints", timeout=180, alive=running)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
        done = finished_shards(ws)
        assert 2 <= len(done) < n // shard_size
        assert ws.manifest("answers") is None  # killed: no manifest, no output tables
        done_ids = set().union(*(answered_ids(p) for p in done))
        done_texts = set(translations.filter(pl.col("translation_id").is_in(list(done_ids)))["text"])
        first_run = len(server.bodies)
        completed_first = {k for k, v in server.completed.items() if v}

        # The rerun finds the same server by another name, with another concurrency and timeout (an
        # endpoint moved, or driven harder): none of that changes a reply, so the checkpoints still count.
        write_config(tmp_path, server.base_url.replace("127.0.0.1", "localhost"), shard_size=shard_size, slots=2,
                     concurrency=shard_size, timeout_s=60)
        rerun = curate_answers(tmp_path)
        out, _ = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, out
        second = server.bodies[first_run:]

    manifest = ws.manifest("answers")
    assert manifest["status"] == "complete"
    shards = manifest["report"]["shards"]
    assert shards == {"total": n // shard_size, "resumed": len(done), "shard_size": shard_size}
    # Not one prompt of a finished shard went to the server again ...
    assert not [b for b in second if any(t.encode() in b for t in done_texts)]
    # ... and of the requests the server had answered before the kill, only those the client had
    # not yet stored (in flight when it died: at most one budget's worth) were sent again.
    repeated = [b for b in second if hashlib.sha256(b).hexdigest() in completed_first]
    assert len(repeated) <= 2 * shard_size
    assert len(second) <= n - len(done_ids)
    # The output is complete and in input order.
    candidates, rejects = ws.read("answers/candidates"), ws.read("answers/rejects")
    assert candidates.height + rejects.height == n
    assert candidates["translation_id"].to_list() == [t for t in translations["translation_id"] if t in set(candidates["translation_id"])]
    assert candidates.height == n  # the canned reply passes every filter
    assert not shard_folder(ws).exists()  # checkpoints go once the stage is written


def test_cli_answers_failed_calls_leave_the_stage_incomplete_and_a_plain_rerun_retries_them(tmp_path, monkeypatch):
    n = 8
    ws = Workspace(tmp_path / "ws")
    translations = questions(n)
    failing = translations["text"][5]
    ws.run_stage("translate", lambda: StageOutput(tables={"translations": translations}))
    monkeypatch.chdir(tmp_path)
    with FaultServer(FaultConfig(plans={"": [REPLY], failing: ["500"] * 10}, reply=ANSWER)) as server:
        write_config(tmp_path, server.base_url, shard_size=3, slots=2, concurrency=4)
        result = CliRunner().invoke(app, ["answers"])  # with its progress bar, fed by two shard threads
        assert result.exit_code == 0, result.output
        first = ws.manifest("answers")
        assert first["status"] == "incomplete" and first["llm_errors"]["count"] == 1
        assert first["report"]["shards"]["total"] == 3
        assert first["outputs"]["candidates"]["rows"] == n - 1 and first["outputs"]["rejects"]["rows"] == 1

        server.config.plans = {"": [REPLY]}
        sent_before = len(server.bodies)
        result = CliRunner().invoke(app, ["answers", "--quiet"])
        assert result.exit_code == 0, result.output
        retried = server.bodies[sent_before:]
    assert len(retried) == 1 and failing.encode() in retried[0]
    second = ws.manifest("answers")
    assert second["status"] == "complete" and second["llm_errors"]["count"] == 0
    assert ws.read("answers/candidates")["translation_id"].to_list() == translations["translation_id"].to_list()


def shard_with_error_rows(rows: pl.DataFrame) -> StageOutput:
    status = ["error" if "FAIL" in t else "ok" for t in rows["text"]]
    return StageOutput(tables={"rows": rows.with_columns(status=pl.Series(status), error=pl.lit("http_500: x"))},
                       report={"rows": rows.height})


def test_a_checkpointed_shard_with_failed_calls_is_computed_again_not_resumed(tmp_path):
    df = pl.DataFrame({"i": range(9), "text": ["ok"] * 4 + ["FAIL"] + ["ok"] * 4})
    checkpoints = ShardCheckpoints(tmp_path / ".shards" / "fp-3")
    map_shards(shard_with_error_rows, df, shard_input="rows", shard_size=3, checkpoints=checkpoints)
    assert json.loads((checkpoints.shard_dir(1) / DONE).read_text())["llm_errors"] == 1
    seen: list[list[int]] = []

    def recorded(rows: pl.DataFrame) -> StageOutput:
        seen.append(rows["i"].to_list())
        return shard_with_error_rows(rows)

    again = map_shards(recorded, df, shard_input="rows", shard_size=3, checkpoints=checkpoints, stream_merge=True)
    assert seen == [[3, 4, 5]] and again.report["shards"]["resumed"] == 2


def schema_drifting_shard(rows: pl.DataFrame) -> StageOutput:
    # A shard with no notes writes the column as nulls: the merge must still line the shards up.
    notes = pl.lit(None) if rows["i"][0] == 0 else pl.col("i").cast(pl.String)
    return StageOutput(tables={"rows": rows.with_columns(note=notes)}, report={"rows": rows.height, "by": {"n": rows.height}})


def test_stream_merge_scans_the_shard_files_in_input_order_and_writes_them_streamed(tmp_path):
    df = pl.DataFrame({"i": range(25), "text": [f"row {i}" for i in range(25)]})
    checkpoints = ShardCheckpoints(tmp_path / "ws" / "stages" / "s" / SHARDS_DIR / "fp-4")
    out = map_shards(schema_drifting_shard, df, shard_input="rows", shard_size=4, checkpoints=checkpoints,
                     stream_merge=True, max_in_flight=3)
    merged = out.tables["rows"]
    assert isinstance(merged, pl.LazyFrame)  # nothing but the plan is held; the rows are in the shard files
    assert out.report["rows"] == 25 and out.report["by"] == {"n": 25} and out.report["shards"]["total"] == 7
    ws = Workspace(tmp_path / "ws")
    result = ws.run_stage("s", lambda: out)
    written = ws.read("s/rows")
    assert written["i"].to_list() == list(range(25))
    assert written["note"].to_list() == [None] * 4 + [str(i) for i in range(4, 25)]
    # Counts come from the written file: the summary of the table and the stage's own report, summed.
    assert result.manifest["outputs"]["rows"]["rows"] == 25 and result.manifest["report"]["by"] == {"n": 25}
    assert result.manifest["llm_errors"]["count"] == 0
    with pytest.raises(ValueError, match="needs checkpoints"):
        map_shards(schema_drifting_shard, df, shard_input="rows", shard_size=4, stream_merge=True)


def shard_drifting_midway(rows: pl.DataFrame) -> StageOutput:
    # Shards 2 and 3 write their note as nulls, shard 4 its columns in another order: runs of
    # same-schema files are scanned together, and the merge must still line every shard up in order.
    first = rows["i"][0]
    notes = pl.lit(None) if first in (8, 12) else pl.col("i").cast(pl.String)
    out = rows.with_columns(note=notes)
    return StageOutput(tables={"rows": out.select(reversed(out.columns)) if first == 16 else out})


def test_stream_merge_lines_up_shards_whose_schema_changes_midway(tmp_path):
    df = pl.DataFrame({"i": range(30), "text": [f"row {i}" for i in range(30)]})
    checkpoints = ShardCheckpoints(tmp_path / "ws" / "stages" / "s" / SHARDS_DIR / "fp-4")
    out = map_shards(shard_drifting_midway, df, shard_input="rows", shard_size=4, checkpoints=checkpoints,
                     stream_merge=True, max_in_flight=2)
    Workspace(tmp_path / "ws").run_stage("s", lambda: out)
    written = Workspace(tmp_path / "ws").read("s/rows")
    assert written.columns == ["i", "text", "note"]
    assert written["i"].to_list() == list(range(30))
    assert written["text"].to_list() == df["text"].to_list()
    assert written["note"].to_list() == [None if 8 <= i < 16 else str(i) for i in range(30)]


@pytest.mark.slow
@pytest.mark.llm
def test_cli_answers_in_shards_with_the_local_model(tmp_path, llm_server, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ws = Workspace(tmp_path / "ws")
    translations = questions(3)
    ws.run_stage("translate", lambda: StageOutput(tables={"translations": translations}))
    write_config(tmp_path, llm_server.base_url, shard_size=1, slots=2, concurrency=2, model=llm_server.endpoint.model,
                 timeout_s=180, answers="overrides = { temperature = 0.0, max_tokens = 32 }\n")
    result = CliRunner().invoke(app, ["answers", "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = ws.manifest("answers")
    assert manifest["report"]["shards"] == {"total": 3, "resumed": 0, "shard_size": 1}
    assert manifest["outputs"]["candidates"]["rows"] + manifest["outputs"]["rejects"]["rows"] == 3
    both = pl.concat([ws.read("answers/candidates").select("translation_id", "status"),
                      ws.read("answers/rejects").select("translation_id", "status")])
    assert set(both["translation_id"]) == set(translations["translation_id"])
    assert manifest["report"]["endpoint_utilization"]  # the meter saw the real endpoint busy
    assert "skipped" in CliRunner().invoke(app, ["answers", "--quiet"]).output
