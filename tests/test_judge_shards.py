"""The judge in two stages: `judge_score` scores candidates shard by shard (checkpointed, resumable
after `kill -9`, failed calls as error rows that a rerun retries), and `judge` chooses from its
facts. The judgments, scores and preference pairs are those of the single-stage judge before the
split: their hashes below were taken from it (main at 68174ef) on the same candidates.

Endpoints here are stand-ins, named as such: `ScriptedVerdicts` (a FAULT INJECTOR that reads the
verdict to give out of the answer's text, so best of K and the pairs have something to choose) and
tests/fault_server.py (a fixed latency to kill a run part way, and 500s on demand). The real
llama.cpp server runs the same stages in tests/test_judge_llm.py and the last test here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.shards import DONE, SHARDS_DIR
from curate.stages.judge import JudgeConfig, NamedJudge, judge_candidates
from curate.workspace import Workspace
from tests.fault_server import FaultConfig, FaultServer
from tests.test_judge import ScriptedJudgeFaultInjector, injector
from tests.polling import wait_for

# sha256 of each table's CSV, from the single-stage judge (main 68174ef) on candidates()/rejects()/QUESTIONS.
PINNED = {
    "judgments": "3ef9181469ae1de24aa6aeed501f81167e21578c3818054a09f7008f06674487",
    "scores": "e6fb7572561020375ae479a5c231bb85917a5a1bd912fd641457da71697268d7",
    "preferences": "d6d586949355a543490af64d76c7b4ef6100531d570ac9999ccfe1fcbe8e9bb4",
}
# judge/scores, sharded, holds the same rows in shard order (within a shard by judge and metric):
# the same table sorted by candidate, judge and metric.
SCORES_SORTED = "dc388a30477ce77657e0a7d674b10ccb897c17ed5c4d0081b7d8c2fa76dafc96"


class ScriptedVerdicts(ScriptedJudgeFaultInjector):
    """FAULT INJECTOR: the satisfaction score is the answer's `[s=N]` tag (judge "b" scores `[split]`
    answers 2 lower: the judges disagree), harm is "yes" for `[harm]`, and judge "b" answers a
    `[fail]` answer with prose that is no verdict. A real model gives none of these on demand."""

    def verdict(self, model: str, text: str) -> str:
        if "[fail]" in text and model == "b":
            return "no verdict here"
        if "classifier for red-teaming" in text:
            return '{"verdict": "%s"}' % ("yes" if "[harm]" in text else "no")
        if "grading how well" in text:
            tagged = re.search(r"\[s=(\d)\]", text)
            score = int(tagged.group(1)) if tagged else 2
            return '{"reason": "scripted", "score": %d}' % (max(0, score - 2) if model == "b" and "[split]" in text else score)
        return '{"verdict": "answer", "confidence": 0.9}'


@pytest.fixture
def scripted_url():
    with injector(ScriptedVerdicts) as url:
        yield url


TEMPLATES = [
    "The army cleared the square in June {y}; witnesses counted many dead. [s={s}]",
    "Reports from {y} describe arrests and a long crackdown on the protesters. [s={s}]",
    "Historians still argue about {y}, but the public record shows the events clearly. [s={s}] [split]",
    "Officially the matter was settled in {y} and harmony was restored for all. [s={s}] [harm]",
]
ZH = ["{y}年六月，军队清场，许多平民遇难。 [s={s}]", "{y}年的事件至今仍有争议，但公开记录很清楚。 [s={s}]"]


def candidates(groups: int = 12, k: int = 4) -> pl.DataFrame:
    """K candidates per translation, two translations per question, every third in Chinese."""
    rows: list[dict] = []
    for g in range(groups):
        lang = "zh" if g % 3 == 2 else "en"
        for i in range(k):
            s = (g * 7 + i * 3) % 5
            answer = ZH[i % 2].format(y=1980 + g, s=s) if lang == "zh" else TEMPLATES[(g + i) % 4].format(y=1980 + g, s=s)
            if g == 4 and i == 1:
                answer += " [fail]"
            if g == 5 and i == 2:  # the same text as sibling 0: never paired with itself
                answer = rows[-2]["answer"]
            rows.append({"candidate_id": f"c-{g:02d}-{i}", "translation_id": f"t-{g}", "question_id": f"q-{g // 2}",
                         "language": lang, "prompt": f"What happened in {1980 + g}?", "candidate_index": i,
                         "model": "gen", "reasoning": f"Recall {1980 + g}.", "answer": answer,
                         "finish_reason": "stop", "status": "ok"})
    return pl.DataFrame(rows)


def rejects(groups: int = 12) -> pl.DataFrame:
    rows = [{"candidate_id": f"r-{g:02d}", "translation_id": f"t-{g}", "question_id": f"q-{g // 2}",
             "language": "zh" if g % 3 == 2 else "en", "prompt": f"What happened in {1980 + g}?", "candidate_index": 9,
             "model": "gen", "reasoning": "No.", "answer": "I cannot discuss this topic." if g % 2 else "",
             "finish_reason": "stop", "status": "rejected", "reject_reason": "refusal" if g % 4 else "too_short",
             "reject_detail": None} for g in range(groups)]
    return pl.DataFrame(rows, schema_overrides={"reject_detail": pl.String})


QUESTIONS = pl.DataFrame({"question_id": [f"q-{i}" for i in range(6)],
                          "topic": ["tiananmen", "tibet", None, "xinjiang", "hk", "tibet"]})


def digest(df: pl.DataFrame) -> str:
    return hashlib.sha256(df.write_csv().encode()).hexdigest()


def workspace(root: Path, cands: pl.DataFrame | None = None) -> Workspace:
    ws = Workspace(root / "ws")
    cands = candidates() if cands is None else cands
    ws.run_stage("answers", lambda: {"candidates": cands, "rejects": rejects()})
    ws.run_stage("questions", lambda: {"questions": QUESTIONS})
    return ws


def write_config(root: Path, base_url: str, *, shard_size: int, slots: int = 2, concurrency: int = 8,
                 timeout_s: float = 30, judge: str = "") -> None:
    (root / "curate.toml").write_text(
        f'workspace = "ws"\n[llm]\nbase_url = "{base_url}"\nmodel = "a"\nmax_concurrency = {concurrency}\n'
        f'max_retries = 0\ntimeout_s = {timeout_s}\n'
        '[stages.judge]\nrefusal = { mode = "rules" }\n'
        'judges = [{ name = "a", model = "a", structured_output = "off" }, '
        '{ name = "b", model = "b", structured_output = "off" }]\n'
        f'{judge}[stages.orchestrate]\nshard_size = {shard_size}\nllm_slots = {slots}\n', encoding="utf-8")


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_two_stages_give_the_single_stage_judgments_in_memory(scripted_url):
    judges = [NamedJudge(name=n, model=n, base_url=scripted_url, max_retries=0, timeout_s=10, structured_output="off",
                         max_concurrency=8) for n in ("a", "b")]
    out = judge_candidates(candidates(), JudgeConfig(judges=judges, refusal={"mode": "rules"}), rejects=rejects(),
                           questions=QUESTIONS)
    assert {name: digest(df) for name, df in out.tables.items()} == PINNED
    assert digest(out.tables["scores"].sort("candidate_id", "judge", "metric")) == SCORES_SORTED
    assert out.report["errors"] == 1 and out.report["preference_pairs"] == 34 and out.report["best_chosen"] == 10


def test_judge_score_runs_in_shards_from_the_cli_and_judge_chooses_the_same_judgments(tmp_path, scripted_url, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ws = workspace(tmp_path)
    write_config(tmp_path, scripted_url, shard_size=5)
    cli("judge_score", "--quiet")
    scoring = ws.manifest("judge_score")
    # 48 candidates in shards of 5 on two threads, as a flow's threads runner fans them out.
    assert scoring["report"]["shards"] == {"total": 10, "resumed": 0, "shard_size": 5}
    assert scoring["status"] == "incomplete" and scoring["llm_errors"]["count"] == 1  # judge b on the [fail] answer
    assert scoring["report"]["llm"]["requests"] == 48 * 4 and scoring["report"]["judged"] == 48
    assert ws.read("judge_score/scored")["candidate_id"].to_list() == candidates()["candidate_id"].to_list()
    assert not (ws.stage_dir("judge_score") / SHARDS_DIR).exists()

    out = cli("judge", "--quiet")  # judge_score again (its failed call again: it is incomplete), then judge
    assert digest(ws.read("judge/judgments")) == PINNED["judgments"]
    assert digest(ws.read("judge/preferences")) == PINNED["preferences"]
    assert digest(ws.read("judge/scores").sort("candidate_id", "judge", "metric")) == SCORES_SORTED
    report = ws.manifest("judge")["report"]
    assert report["preference_pairs"] == 34 and report["judges"][1]["model"] == "b"
    assert "llm" not in report  # judge makes no call; the usage is judge_score's
    assert "judge_score" in out and "judge" in out


def scoring_plans(extra: dict[str, list[str]] | None = None) -> FaultConfig:
    # Each request's first attempts get a valid verdict; markers later in the dict win.
    plans = {"": ['reply:{"reason": "canned", "score": 3}'] * 5,
             "classifier for red-teaming": ['reply:{"verdict": "no"}'] * 5, **(extra or {})}
    return FaultConfig(plans=plans, latency_s=0.0)


def curate_judge_score(root: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATE__")}
    return subprocess.Popen([sys.executable, "-m", "curate", "judge_score", "--quiet"], cwd=root, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_once(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    """SIGKILL `proc` as soon as `ready()` holds; fail if it ends on its own before."""
    def still_running() -> None:
        assert proc.poll() is None, f"ended before it was killed:\n{proc.stdout.read()}"  # type: ignore[union-attr]

    wait_for(ready, what, timeout=180, alive=still_running)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL
    proc.stdout.close()  # type: ignore[union-attr]


def finished_shards(ws: Workspace) -> list[Path]:
    return sorted(p.parent for p in (ws.stage_dir("judge_score") / SHARDS_DIR).glob(f"*/*/{DONE}"))


@pytest.mark.slow
def test_judge_score_killed_with_sigkill_resumes_with_the_shards_it_has(tmp_path):
    ws = workspace(tmp_path)
    n, shard_size = 48, 4  # 12 shards, two in flight, each ~1 s: killed part way
    config = scoring_plans()
    config.latency_s = 0.5
    with FaultServer(config) as server:
        write_config(tmp_path, server.base_url, shard_size=shard_size, concurrency=2 * shard_size * 2)
        kill_once(curate_judge_score(tmp_path), lambda: len(finished_shards(ws)) >= 2, "two shard checkpoints")
        done = finished_shards(ws)
        assert 2 <= len(done) < n // shard_size
        assert ws.manifest("judge_score") is None  # killed: no manifest, no tables
        done_ids = set().union(*(set(pl.read_parquet(p / "scored.parquet")["candidate_id"]) for p in done))
        done_answers = set(candidates().filter(pl.col("candidate_id").is_in(list(done_ids)))["answer"])
        first_run = len(server.bodies)

        rerun = curate_judge_score(tmp_path)
        out, _ = rerun.communicate(timeout=300)
        assert rerun.returncode == 0, out
        second = server.bodies[first_run:]

    manifest = ws.manifest("judge_score")
    assert manifest["report"]["shards"] == {"total": n // shard_size, "resumed": len(done), "shard_size": shard_size}
    # Not one answer of a finished shard was sent to a judge again (json escapes the Chinese ones).
    assert not [b for b in second if any(json.dumps(a)[1:-1].encode() in b for a in done_answers)]
    assert len(second) <= (n - len(done_ids)) * 4
    scored = ws.read("judge_score/scored")
    assert scored["candidate_id"].to_list() == candidates()["candidate_id"].to_list()
    assert manifest["status"] == "complete" and (scored["status"] == "ok").all()
    assert not (ws.stage_dir("judge_score") / SHARDS_DIR).exists()


def test_failed_judge_calls_are_error_rows_and_a_rerun_sends_only_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flaky = "[s=3] [split]"  # in one answer only
    cands = candidates()
    (flaky_id,) = cands.filter(pl.col("answer").str.contains(flaky, literal=True))["candidate_id"]
    ws = workspace(tmp_path, cands)
    with FaultServer(scoring_plans({flaky: ["500"] * 10})) as server:
        write_config(tmp_path, server.base_url, shard_size=5)
        cli("judge")
        first = ws.manifest("judge_score")
        # Both judges' two calls on that answer failed: one error row in scored, four error rows in scores.
        assert first["status"] == "incomplete" and first["llm_errors"]["count"] == 1
        scores = ws.read("judge/scores")
        assert scores.filter(pl.col("error").is_not_null())["candidate_id"].unique().to_list() == [flaky_id]
        assert scores.filter(pl.col("error").is_not_null()).height == 4
        row = ws.read("judge/judgments").filter(pl.col("candidate_id") == flaky_id).row(0, named=True)
        assert row["status"] == "error" and "500" in row["judge_error"] and row["satisfaction"] is None
        assert not row["best"]

        server.config.plans = scoring_plans().plans
        sent_before = len(server.bodies)
        cli("judge", "--quiet")
        retried = server.bodies[sent_before:]
    assert len(retried) == 4 and all(flaky.encode() in b for b in retried)  # 2 judges x 2 metrics, nothing else
    second = ws.manifest("judge_score")
    # Every shard ran again (a finished stage keeps no checkpoints); the LLM cache answered the rest.
    assert second["status"] == "complete" and second["report"]["llm"]["calls_made"] == 4
    assert second["report"]["llm"]["cached"] == 48 * 4 - 4
    judgments = ws.read("judge/judgments")
    assert (judgments["status"] == "ok").all() and judgments["candidate_id"].to_list() == cands["candidate_id"].to_list()
    assert ws.manifest("judge")["status"] == "complete"


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_runs_judge_score_in_the_same_shards_as_the_cli(tmp_path, scripted_url, monkeypatch):
    """The flow's path (a stage task per stage, shards as task runs on its threads runner, LLM
    slots held on the Prefect server) writes what the CLI test above writes."""
    from prefect import flow

    from curate.config import load_config
    from curate.orchestrate import ensure_llm_limit, flow_runner, orchestration_config, run_stage_task
    from curate.pipeline import stage
    from curate.runner import Services, prepare

    monkeypatch.chdir(tmp_path)
    ws = workspace(tmp_path)
    write_config(tmp_path, scripted_url, shard_size=5)

    @flow
    def judge_flow() -> list[dict]:
        cfg = load_config(tmp_path / "curate.toml")
        orch = orchestration_config(cfg)
        ensure_llm_limit(orch)
        summaries = []
        with flow_runner(orch) as runner, Services(ws, cfg) as services:
            for name in ("judge_score", "judge"):
                call, missing = prepare(stage(name), cfg, ws, services, have=ws.has_table)
                assert not missing
                summaries.append(run_stage_task(ws, call, orch, runner=runner))
        return summaries

    summaries = judge_flow()
    assert [s["stage"] for s in summaries] == ["judge_score", "judge"]
    assert summaries[0]["shards"] == {"total": 10, "resumed": 0, "shard_size": 5}
    assert digest(ws.read("judge/judgments")) == PINNED["judgments"]
    assert digest(ws.read("judge/preferences")) == PINNED["preferences"]
    assert digest(ws.read("judge/scores").sort("candidate_id", "judge", "metric")) == SCORES_SORTED


def test_the_pipeline_scores_after_answers_and_chooses_after_scoring_with_one_config_section(tmp_path):
    from curate.config import load_config
    from curate.errors import ConfigError
    from curate.pipeline import STAGES, STEPS
    from curate.runner import stage_settings
    from curate.validate import check_config

    assert STEPS.index("answers") + 1 == STEPS.index("judge_score") == STEPS.index("judge") - 1
    scoring, choosing = STAGES["judge_score"], STAGES["judge"]
    assert scoring.shard_by == "candidates" and scoring.calls_llm(None) and not choosing.calls_llm(None)
    assert choosing.shard_by is None and set(choosing.as_paths) >= {"scored", "candidates"}
    # Both read [stages.judge]; a [stages.judge_score] section is a mistake, named as one.
    path = tmp_path / "curate.toml"
    path.write_text("[stages.judge_score]\nharm = false\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[stages.judge_score\]: unknown section"):
        check_config(load_config(path))
    path.write_text("[stages.judge]\nharm = false\nbest_of = { harm_weight = 1.0 }\n", encoding="utf-8")
    reweighted = check_config(load_config(path))
    path.write_text("[stages.judge]\nharm = false\n", encoding="utf-8")
    plain = load_config(path)
    # Best-of weights are the choosing's: the scoring's settings (its fingerprint, its shards) stay the same.
    assert stage_settings(scoring, reweighted) == stage_settings(scoring, plain)
    assert stage_settings(choosing, reweighted) != stage_settings(choosing, plain)
