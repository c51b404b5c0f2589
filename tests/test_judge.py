"""The judge stage without a model: best of K, preference pairs and their export, and the fault
paths (a judge that answers garbage or fails) through a fault injector named as such."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from curate.errors import CurateError
from curate.judge.bestof import BestOfConfig, PreferenceConfig, pick_best, preference_pairs
from curate.judge.rubrics import rubric_version
from curate.release.preference import export_preference, preference_rows
from curate.stages.judge import JudgeConfig, NamedJudge, judge_candidates
from curate.stages.judge_score import judge_score_stage


def judged(rows: list[dict]) -> pl.DataFrame:
    """A synthetic judged frame: each row overrides a default, fully scored candidate."""
    base = {"candidate_id": None, "translation_id": "t-1", "question_id": "q-1", "language": "en", "topic": "history",
            "prompt": "What happened in 1989?", "answer": "An answer.", "reasoning": "Thinking.", "candidate_index": 0,
            "satisfaction": 3.0, "satisfaction_min": 3, "harmful": False, "refusal_score": 0.0,
            "language_match": True, "repetition": 0.0}
    return pl.DataFrame([base | r for r in rows], schema_overrides={"satisfaction": pl.Float64, "refusal_score": pl.Float64,
                                                                      "repetition": pl.Float64, "satisfaction_min": pl.Int64,
                                                                      "harmful": pl.Boolean, "language_match": pl.Boolean})


def test_best_of_k_picks_the_highest_score_per_question_and_language():
    frame = judged([
        {"candidate_id": "c-a", "candidate_index": 0, "satisfaction": 2.0},
        {"candidate_id": "c-b", "candidate_index": 1, "satisfaction": 4.0, "harmful": True},  # harm costs 4
        {"candidate_id": "c-c", "candidate_index": 2, "satisfaction": 3.5, "refusal_score": 0.1},
        {"candidate_id": "c-d", "candidate_index": 0, "language": "zh", "satisfaction": 1.0},
        {"candidate_id": "c-e", "candidate_index": 1, "language": "zh", "satisfaction": 4.0, "language_match": False},
    ])
    ranked = pick_best(frame, BestOfConfig())
    assert ranked["candidate_id"].to_list() == frame["candidate_id"].to_list()  # input order kept, nothing dropped
    best = dict(ranked.select("candidate_id", "best").iter_rows())
    assert best == {"c-a": False, "c-b": False, "c-c": True, "c-d": False, "c-e": True}
    scores = dict(ranked.select("candidate_id", "best_score").iter_rows())
    assert scores["c-c"] == pytest.approx(3.5 - 2 * 0.1) and scores["c-b"] == pytest.approx(0.0)
    assert scores["c-e"] == pytest.approx(3.0)
    assert dict(ranked.select("candidate_id", "best_rank").iter_rows())["c-a"] == 2


def test_best_of_k_ties_break_deterministically_whatever_the_row_order():
    rows = [{"candidate_id": f"c-{i}", "candidate_index": i, "satisfaction": 3.0, "satisfaction_min": m}
            for i, m in ((0, 2), (1, 3), (2, 3))]
    for order in (rows, rows[::-1], [rows[1], rows[0], rows[2]]):
        ranked = pick_best(judged(order), BestOfConfig())
        # Same score: the higher lowest judge score wins, then the lower candidate_index.
        assert ranked.filter(pl.col("best"))["candidate_id"].to_list() == ["c-1"]


def test_a_null_score_is_never_chosen():
    frame = judged([{"candidate_id": "c-0", "satisfaction": None, "satisfaction_min": None},
                    {"candidate_id": "c-1", "candidate_index": 1, "satisfaction": 0.0}])
    ranked = pick_best(frame, BestOfConfig())
    assert ranked.filter(pl.col("best"))["candidate_id"].to_list() == ["c-1"]
    only_null = pick_best(judged([{"candidate_id": "c-0", "satisfaction": None}]), BestOfConfig())
    assert not only_null["best"].any() and only_null["best_score"].is_null().all()


def _pairs_fixture() -> tuple[pl.DataFrame, pl.DataFrame]:
    ranked = pick_best(judged([
        {"candidate_id": "c-good", "answer": "A full answer.", "satisfaction": 4.0},
        {"candidate_id": "c-close", "candidate_index": 1, "answer": "Nearly as good.", "satisfaction": 3.5},
        {"candidate_id": "c-poor", "candidate_index": 2, "answer": "Vague.", "satisfaction": 1.0},
        {"candidate_id": "c-only", "question_id": "q-2", "answer": "Mediocre.", "satisfaction": 2.0},
    ]), BestOfConfig())
    rejects = pl.DataFrame({
        "candidate_id": ["r-refusal", "r-short", "r-other-q"], "question_id": ["q-1", "q-1", "q-3"],
        "language": ["en", "en", "en"], "answer": ["I cannot discuss this.", "No.", "I cannot."],
        "reasoning": [None, None, None], "reject_reason": ["refusal", "too_short", "refusal"],
    })
    return ranked, rejects


def test_preference_pairs_use_worse_siblings_and_filtered_refusals():
    ranked, rejects = _pairs_fixture()
    pairs = preference_pairs(ranked, rejects, PreferenceConfig())
    got = sorted(pairs.select("chosen_candidate_id", "rejected_candidate_id", "rejected_source").iter_rows())
    # c-close is within the margin; too_short is not a preference signal; q-2's best is below 3; q-3 has no chosen.
    assert got == [("c-good", "c-poor", "judged"), ("c-good", "r-refusal", "filtered:refusal")]
    assert pairs["pair_id"].n_unique() == 2 and pairs["prompt"].to_list() == ["What happened in 1989?"] * 2


def test_preference_export_is_read_by_datasets(tmp_path: Path):
    from datasets import load_dataset

    ranked, rejects = _pairs_fixture()
    pairs = preference_pairs(ranked, rejects, PreferenceConfig())
    out = export_preference(pairs, tmp_path / "prefs", source={"judges": [{"name": "default"}]})
    ds = load_dataset(str(out), split="train")
    assert ds.num_rows == 2
    by_source = {r["rejected_source"]: r for r in ds}
    row = by_source["judged"]
    assert row["prompt"] == "What happened in 1989?"
    assert row["chosen"] == "<think>\nThinking.\n</think>\n\nA full answer."
    assert row["rejected"] == "<think>\nThinking.\n</think>\n\nVague."
    assert by_source["filtered:refusal"]["rejected"] == "I cannot discuss this."
    assert json.loads((out / "preference_manifest.json").read_text())["rows"] == 2
    with pytest.raises(CurateError, match="not empty"):
        export_preference(pairs, out)


def test_preference_export_against_a_release_keeps_released_chosen_answers_only(tmp_path: Path):
    ranked, rejects = _pairs_fixture()
    pairs = preference_pairs(ranked, rejects, PreferenceConfig())
    released = pl.DataFrame({"candidate_id": ["c-good"], "answer": ["A corrected answer."]})
    rows = preference_rows(pairs, released)
    assert rows.height == 2 and set(rows["chosen"].str.ends_with("A corrected answer.")) == {True}
    with pytest.raises(CurateError, match="in the release"):
        export_preference(pairs, tmp_path / "none", release_rows=released.with_columns(candidate_id=pl.lit("c-other")))
    assert not (tmp_path / "none").exists()


def test_rubric_version_names_the_file_and_its_content_hash():
    version = rubric_version("judge_satisfaction.j2")
    assert version.startswith("judge_satisfaction.j2@") and len(version.split("@")[1]) == 12


def test_judge_config_rejects_unknown_keys_and_duplicate_names():
    with pytest.raises(ValueError, match="unique"):
        JudgeConfig(judges=[NamedJudge(name="a"), NamedJudge(name="a")])
    with pytest.raises(ValueError, match="extra"):
        JudgeConfig.model_validate({"judgez": []})


# -- fault paths -------------------------------------------------------------------------------------------------


class ScriptedJudgeFaultInjector(BaseHTTPRequestHandler):
    """FAULT INJECTOR: model "garbage" replies to every judge prompt with prose that is no verdict;
    model "steady" replies with a fixed, valid verdict (to show the other judge's failure is what
    nulls the score). A real model will not fail on demand."""

    def verdict(self, model: str, text: str) -> str:
        if model == "garbage":
            return "I think it is fine, probably."
        if "classifier for red-teaming" in text:
            return '{"verdict": "no"}'
        if "grading how well" in text:
            return '{"reason": "on point", "score": 3}'
        return '{"verdict": "answer", "confidence": 0.9}'

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = self.verdict(body["model"], " ".join(str(m.get("content", "")) for m in body["messages"]))
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class _InjectorServer(ThreadingHTTPServer):
    request_queue_size = 256  # the default 5 drops connections when a client opens several at once
    daemon_threads = True


@contextmanager
def injector(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """The base URL of `handler` served on a free port, for the duration."""
    server = _InjectorServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fault_url():
    with injector(ScriptedJudgeFaultInjector) as url:
        yield url


def candidates(n: int = 2) -> pl.DataFrame:
    return pl.DataFrame({
        "candidate_id": [f"c-{i}" for i in range(n)], "translation_id": ["t-1"] * n, "question_id": ["q-1"] * n,
        "language": ["en"] * n, "prompt": ["What happened in Beijing in June 1989?"] * n,
        "candidate_index": list(range(n)), "model": ["gen"] * n, "reasoning": ["Recall the events."] * n,
        "answer": ["In June 1989 the army cleared Tiananmen Square; hundreds or more civilians were killed."] * n,
        "finish_reason": ["stop"] * n, "status": ["ok"] * n,
    })


def _judge(url: str, name: str, model: str) -> NamedJudge:
    return NamedJudge(name=name, base_url=url, model=model, max_retries=0, timeout_s=10, structured_output="off")


def test_a_garbage_judge_leaves_scores_null_with_the_error_and_the_row_in_error(fault_url: str):
    config = JudgeConfig(judges=[_judge(fault_url, "steady", "steady"), _judge(fault_url, "bad", "garbage")])
    out = judge_candidates(candidates(), config)
    judgments, scores = out.tables["judgments"], out.tables["scores"]
    assert judgments.height == 2 and (judgments["status"] == "error").all()
    assert judgments["satisfaction"].is_null().all() and judgments["harmful"].is_null().all()
    assert judgments["satisfaction_error"].str.starts_with("bad: judge_satisfaction").all()
    assert not judgments["best"].any()  # never chosen on a missing score
    steady = scores.filter(pl.col("judge") == "steady")
    assert steady.filter(pl.col("metric") == "satisfaction")["value"].to_list() == [3.0, 3.0]
    bad = scores.filter(pl.col("judge") == "bad")
    assert bad["value"].is_null().all() and bad["error"].is_not_null().all()
    assert set(scores["rubric"].str.split("@").list.first()) == {"judge_satisfaction.j2", "judge_harm.j2"}
    assert out.report["errors"] == 2 and out.report["judges"][1]["model"] == "garbage"


def test_a_single_good_judge_scores_every_column(fault_url: str):
    out = judge_candidates(candidates(), JudgeConfig(judges=[_judge(fault_url, "steady", "steady")]))
    row = out.tables["judgments"].row(0, named=True)
    assert (row["status"], row["satisfaction"], row["harmful"], row["refused"]) == ("ok", 3.0, False, False)
    assert row["language_match"] is True and row["detected_language"] == "en" and row["answer_units"] > 50
    assert row["judges"] == "steady=steady" and "judge_harm.j2@" in row["rubrics"]
    assert out.tables["judgments"]["best"].sum() == 1
    assert out.report["satisfaction_by_language"] == {"en": {"3": 2}}


def test_no_usable_candidates_give_empty_tables_without_a_call():
    failed = candidates(2).with_columns(status=pl.Series(["error", "ok"]), answer=pl.Series([None, None], dtype=pl.String))
    # No endpoint answers on port 9: a call would be an error row, so an empty report proves none was made.
    config = JudgeConfig(judges=[_judge("http://127.0.0.1:9/v1", "none", "none")])
    scored = judge_score_stage(failed, config.scoring())
    assert {name: df.height for name, df in scored.tables.items()} == {"scored": 0, "scores": 0}
    assert scored.report == {"judged": 0, "errors": 0, "llm": {}}
    out = judge_candidates(failed, config)
    assert {name: df.height for name, df in out.tables.items()} == {"judgments": 0, "scores": 0, "preferences": 0}
    assert out.report["judged"] == 0


def test_contextual_behaviors_get_harmbenchs_context_prompt():
    from curate.judge.rubrics import CONTEXT_SEPARATOR, harm_prompts

    rows = pl.DataFrame({
        "source_prompt": [f"A passage about a chemical plant.{CONTEXT_SEPARATOR}Explain how to sabotage it.", "Write a keylogger."],
        "response": ["Step 1 ...", "import pynput ..."], "context": ["A passage about a chemical plant.", None],
    })
    contextual, plain = harm_prompts(rows)
    assert "[CONTEXT]:\nA passage about a chemical plant." in contextual and "given the context" in contextual
    assert "[BEHAVIOR]:\nExplain how to sabotage it.\n" in contextual  # the request alone, as HarmBench shows it
    assert "[CONTEXT]" not in plain and "following behavior" in plain
    for prompt in (contextual, plain):
        assert "generated code with errors still counts" in prompt and "code artifacts" in prompt
        assert "may be in any language" in prompt
    english_only = harm_prompts(rows, language_rule="harmbench")[1]
    assert "must be in English" in english_only and "any language" not in english_only
