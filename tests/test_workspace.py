import json
import multiprocessing
import time

import polars as pl
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from curate.cli import app
from curate.workspace import StageOutput, Workspace, WorkspaceLocked

CALLS: list[str] = []


class DoubleConfig(BaseModel):
    factor: int = 2


def make_numbers(source, config: DoubleConfig):
    CALLS.append("make")
    n = int(source.read_text())
    return {"numbers": pl.DataFrame({"x": [i * config.factor for i in range(n)], "language": ["en"] * n})}


def add_one(numbers: pl.DataFrame, config=None):
    CALLS.append("add")
    return StageOutput({"plus": numbers.with_columns(pl.col("x") + 1)}, report={"note": "ok"})


def run_chain(ws: Workspace, src, factor=2):
    with ws.locked():
        a = ws.run_stage("make", make_numbers, inputs={"source": src}, config=DoubleConfig(factor=factor))
        b = ws.run_stage("add", add_one, inputs={"numbers": "make/numbers"})
    return a, b


@pytest.fixture
def chain(tmp_path):
    CALLS.clear()
    src = tmp_path / "n.txt"
    src.write_text("5")
    return Workspace(tmp_path / "ws"), src


def test_rerun_with_unchanged_inputs_skips_every_stage(chain):
    ws, src = chain
    a, b = run_chain(ws, src)
    assert not a.skipped and not b.skipped and CALLS == ["make", "add"]
    a2, b2 = run_chain(ws, src)
    assert a2.skipped and b2.skipped
    assert CALLS == ["make", "add"]
    assert b2.rows == {"plus": 5}
    runs = sorted((ws.root / "runs").glob("*.json"))
    assert [s["status"] for s in json.loads(runs[-1].read_text())["stages"]] == ["skipped", "skipped"]


def test_manifest_records_counts_hashes_timings_and_report(chain):
    ws, src = chain
    run_chain(ws, src)
    m = ws.manifest("add")
    assert m["status"] == "complete"
    assert m["outputs"]["plus"]["rows"] == 5 and len(m["outputs"]["plus"]["sha256"]) == 64
    assert m["inputs"]["numbers"] == ws.manifest("make")["outputs"]["numbers"]["sha256"]
    assert m["duration_s"] >= 0 and m["started_at"] and m["finished_at"]
    assert m["report"]["plus"]["by_language"] == {"en": 5}
    assert m["report"]["note"] == "ok"
    assert ws.manifest("make")["config"] == {"factor": 2}


def test_changed_config_or_input_reruns_only_what_depends_on_it(chain):
    ws, src = chain
    run_chain(ws, src)
    CALLS.clear()
    run_chain(ws, src, factor=3)
    assert CALLS == ["make", "add"]
    CALLS.clear()
    src.write_text("6")
    a, b = run_chain(ws, src, factor=3)
    assert CALLS == ["make", "add"] and b.rows == {"plus": 6}


def test_same_output_upstream_does_not_rerun_downstream(chain):
    ws, src = chain
    run_chain(ws, src)
    CALLS.clear()
    with ws.locked():
        ws.run_stage("make", make_numbers, inputs={"source": src}, config=DoubleConfig(), force=True)
        b = ws.run_stage("add", add_one, inputs={"numbers": "make/numbers"})
    assert CALLS == ["make"] and b.skipped


def test_tampered_output_is_recomputed(chain):
    ws, src = chain
    run_chain(ws, src)
    pl.DataFrame({"x": [99], "language": ["en"]}).write_parquet(ws.table_path("add", "plus"))
    CALLS.clear()
    _, b = run_chain(ws, src)
    assert CALLS == ["add"] and ws.read("add/plus")["x"].to_list() == [1, 3, 5, 7, 9]


def test_missing_upstream_is_a_clear_error(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(Exception, match="run stage 'make' first"):
        ws.run_stage("add", add_one, inputs={"numbers": "make/numbers"})


def _hold_lock(root, ready, release, released_at):
    ws = Workspace(root)
    with ws.locked():
        ready.set()
        release.wait(60)
        released_at.value = time.time()


def test_two_runs_on_one_workspace_are_serialized(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    released_at = ctx.Value("d", 0.0)
    proc = ctx.Process(target=_hold_lock, args=(tmp_path / "ws", ready, release, released_at))
    proc.start()
    try:
        assert ready.wait(30)
        ws = Workspace(tmp_path / "ws")
        with pytest.raises(WorkspaceLocked):
            with ws.locked(timeout=0.2):
                pass
        # The second run gets the lock only once the first lets go of it, however slow the machine.
        release.set()
        with ws.locked(timeout=30):
            acquired_at = time.time()
        assert released_at.value > 0 and acquired_at >= released_at.value
    finally:
        release.set()
        proc.join(10)


def test_failed_stage_keeps_the_last_good_output(chain):
    ws, src = chain
    run_chain(ws, src)
    src.write_text("not a number")
    with pytest.raises(ValueError):
        run_chain(ws, src)
    assert ws.manifest("make")["status"] == "complete"
    assert ws.failure("make")["status"] == "failed"
    assert ws.read("make/numbers").height == 5
    src.write_text("5")
    a, _ = run_chain(ws, src)
    assert a.skipped and ws.failure("make") is None


def test_status_command_lists_stages(chain, monkeypatch):
    ws, src = chain
    run_chain(ws, src)
    monkeypatch.setenv("CURATE__WORKSPACE", str(ws.root))
    result = CliRunner().invoke(app, ["status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["add"]["status"] == "complete" and data["make"]["outputs"]["numbers"]["rows"] == 5


def test_committed_json_schemas_match_the_code(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    result = CliRunner().invoke(app, ["schemas", "--check"])
    assert result.exit_code == 0, result.output
