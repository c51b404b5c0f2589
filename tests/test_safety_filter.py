"""The safety inverse filter: both directions, harm in the reasoning, best of K, fail-safe review.

The filter logic is tested with the real refusal detector and response rules on crafted answers,
and the harm verdicts handed in through the filter's `harm_judge` seam (the verdicts are the input
under test here). The real HarmBench-style judge runs against the local llama.cpp server in the
slow test at the end, and judge failures are injected with tests/fault_server.py (the fault
injector, used only for the failures a real server will not produce on demand).
"""

from __future__ import annotations

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.refusal import RefusalConfig
from curate.review.routing import RoutingConfig
from curate.stages.safety_filter import (
    REJECT_REASONS,
    REVIEW_REASONS,
    SafetyFilterConfig,
    filter_safety_candidates,
    judge_candidate_harm,
    response_rules,
)
from tests.fault_server import FaultConfig, FaultServer

GOOD_DECLINE = (
    "I can't help with making a weapon, because it could seriously hurt people and is illegal in most places. "
    "Instead, I'd be happy to explain how to stay safe or point you to resources on conflict resolution."
)
BARE_REFUSAL = "I'm sorry, but I can't help with that."
HELPFUL = (
    "To stop a running Python process, find its PID with `ps aux | grep python` and run `kill <PID>`; "
    "if it does not exit, `kill -9 <PID>` forces it. On Windows use Task Manager or `taskkill /PID <PID> /F`."
)
HARMFUL_STEPS = "Sure. Step 1: mix the two chemicals in a closed bottle. Step 2: shake it and leave it near the target."
SAFE_REASONING = "The user asks for something dangerous. I should decline, say why and offer something safe."
HARMFUL_REASONING = "Let me work out the recipe first: mix the two chemicals in a closed bottle, then shake it..."


def candidate(cid: str, prompt_id: str, expected: str, answer: str | None, reasoning: str | None = SAFE_REASONING,
              index: int = 0, status: str = "ok", finish_reason: str = "stop") -> dict:
    return {
        "candidate_id": cid, "prompt_id": prompt_id, "candidate_index": index, "subset": "test", "category": None,
        "expected": expected, "language": "en", "prompt": f"prompt of {prompt_id}", "answer": answer,
        "reasoning": reasoning, "finish_reason": finish_reason, "truncated_in_reasoning": False, "status": status,
        "error": "http_500: boom" if status == "error" else None, "model": "m",
    }


def verdicts(table: dict[str, tuple[bool | None, bool | None, str | None]]):
    """A harm judge that returns the given (harmful_reasoning, harmful_answer, harm_error) per candidate."""

    def judge(candidates: pl.DataFrame, config, **_):
        rows = [{"candidate_id": cid, "harmful_reasoning": table[cid][0], "harmful_answer": table[cid][1],
                 "harm_error": table[cid][2]} for cid in candidates["candidate_id"]]
        schema = {"candidate_id": pl.String, "harmful_reasoning": pl.Boolean, "harmful_answer": pl.Boolean, "harm_error": pl.String}
        return pl.DataFrame(rows, schema=schema), pl.DataFrame()

    return judge


def satisfaction(scores: dict[str, int | None] | None = None, default: int | None = 3):
    """A satisfaction judge that returns the given 0-4 score per candidate (None: the call failed)."""

    def judge(candidates: pl.DataFrame, config, **_):
        values = [(scores or {}).get(cid, default) for cid in candidates["candidate_id"]]
        frame = pl.DataFrame({"candidate_id": candidates["candidate_id"], "satisfaction": values,
                              "satisfaction_error": [None if v is not None else "safety_satisfaction: http_500" for v in values]},
                             schema={"candidate_id": pl.String, "satisfaction": pl.Int64, "satisfaction_error": pl.String})
        return frame, pl.DataFrame()

    return judge


def run(rows: list[dict], table: dict, scores: dict[str, int | None] | None = None, **settings):
    # These tests check the filter's mechanics on short hand-written replies, so they pin the rules
    # detector, whose verdicts on them are explainable and fixed. The trained detector (the default)
    # is measured on real replies in tests/test_refusal_*.py and runs here in the end-to-end test.
    settings.setdefault("refusal", RefusalConfig(mode="rules"))
    config = SafetyFilterConfig(**settings)
    tables, _ = filter_safety_candidates(pl.DataFrame(rows), config, harm_judge=verdicts(table),
                                         satisfaction_judge=satisfaction(scores))
    return tables


def outcome(tables: dict[str, pl.DataFrame]) -> dict[str, str]:
    """candidate_id -> 'kept' or the reject / review reason."""
    out = {cid: "kept" for cid in tables["kept"]["candidate_id"]}
    out |= dict(tables["rejects"].select("candidate_id", "reject_reason").iter_rows())
    for cid, reason in tables["review"].select("candidate_id", "review_reason").iter_rows():
        out.setdefault(cid, reason) if reason == "uncertain_best" else out.__setitem__(cid, reason)
    return out


def test_response_rules_find_the_explanation_and_the_alternative():
    rules = response_rules()
    frame = pl.DataFrame({"answer": [GOOD_DECLINE, BARE_REFUSAL]})
    assert frame.select(pl.col("answer").str.contains(rules["explains"]))["answer"].to_list() == [True, False]
    assert frame.select(pl.col("answer").str.contains(rules["alternative"]))["answer"].to_list() == [True, False]


def test_harmful_prompts_keep_only_declines_that_explain_and_offer_an_alternative():
    rows = [
        candidate("good", "p1", "harmful", GOOD_DECLINE, index=0),
        candidate("bare", "p1", "harmful", BARE_REFUSAL, index=1),
        candidate("complies", "p1", "harmful", HARMFUL_STEPS, index=2),
    ]
    tables = run(rows, {"good": (False, False, None), "bare": (False, False, None), "complies": (False, False, None)})
    assert outcome(tables) == {"good": "kept", "bare": "no_explanation", "complies": "complied"}
    assert tables["selected"]["candidate_id"].to_list() == ["good"]
    assert set(tables["rejects"]["reject_reason"]) <= set(REJECT_REASONS)
    # Every dropped candidate keeps its reason and a detail a reviewer can read.
    assert tables["rejects"]["reject_detail"].null_count() == 0


def test_benign_prompts_keep_only_help_and_drop_over_refusals():
    rows = [candidate("helps", "p2", "benign", HELPFUL, index=0), candidate("refuses", "p2", "benign", BARE_REFUSAL, index=1)]
    tables = run(rows, {"helps": (False, False, None), "refuses": (False, False, None)})
    assert outcome(tables) == {"helps": "kept", "refuses": "over_refusal"}
    assert tables["selected"]["candidate_id"].to_list() == ["helps"]


def test_a_safe_answer_after_a_harmful_chain_of_thought_is_rejected():
    rows = [candidate("cot", "p3", "harmful", GOOD_DECLINE, reasoning=HARMFUL_REASONING),
            candidate("answer", "p3", "harmful", HARMFUL_STEPS, index=1)]
    tables = run(rows, {"cot": (True, False, None), "answer": (False, True, None)})
    assert outcome(tables) == {"cot": "harmful_reasoning", "answer": "harmful_answer"}
    assert tables["selected"].is_empty()


def test_a_failed_harm_judgment_is_never_released_but_sent_to_review():
    rows = [candidate("unjudged", "p4", "harmful", GOOD_DECLINE), candidate("benign", "p5", "benign", HELPFUL)]
    tables = run(rows, {"unjudged": (None, False, "eval_harm: http_500"), "benign": (False, None, "eval_harm: timeout")})
    assert tables["kept"].is_empty() and tables["selected"].is_empty()
    assert outcome(tables) == {"unjudged": "harm_judge_failed", "benign": "harm_judge_failed"}
    assert tables["review"]["reject_detail"].to_list() == ["eval_harm: http_500", "eval_harm: timeout"]


def test_cheap_checks_and_llm_errors_keep_their_reasons():
    rows = [
        candidate("err", "p6", "harmful", None, status="error"),
        candidate("empty", "p6", "harmful", "  ", index=1),
        candidate("cut", "p6", "harmful", GOOD_DECLINE, index=2, finish_reason="length"),
        candidate("noreason", "p6", "harmful", GOOD_DECLINE, reasoning=None, index=3),
    ]
    tables = run(rows, {})
    assert outcome(tables) == {"err": "llm_error", "empty": "empty", "cut": "truncated", "noreason": "missing_reasoning"}
    statuses = dict(tables["rejects"].select("candidate_id", "status").iter_rows())
    assert statuses["err"] == "error" and statuses["empty"] == "rejected"


def test_best_of_k_prefers_the_clearer_behaviour_and_routes_uncertain_bests_to_review():
    hedged = "Here is a general overview of the topic. " * 20 + BARE_REFUSAL  # a refusal phrase deep in a long reply
    rows = [candidate("a", "p7", "benign", HELPFUL, index=0), candidate("b", "p7", "benign", HELPFUL + " Good luck!", index=1),
            candidate("c", "p8", "benign", hedged, index=0)]
    table = {cid: (False, False, None) for cid in ("a", "b", "c")}
    tables = run(rows, table)
    assert tables["selected"]["candidate_id"].to_list() == ["a"]  # tie: the lower candidate index
    wide = run(rows, table, uncertain_low=0.0, uncertain_high=1.0)  # every score uncertain
    assert wide["selected"].is_empty()
    assert set(wide["review"]["review_reason"]) == {"uncertain_best"}
    assert set(REVIEW_REASONS) >= set(wide["review"]["review_reason"])


def test_best_of_k_ranks_by_the_judges_satisfaction_with_a_deterministic_tie_break():
    declines = [candidate(f"h{i}", "p10", "harmful", GOOD_DECLINE + " " * i, index=i) for i in range(3)]
    helps = [candidate(f"b{i}", "p11", "benign", HELPFUL + " " * i, index=i) for i in range(3)]
    table = {c["candidate_id"]: (False, False, None) for c in declines + helps}
    # The higher satisfaction wins in both directions, whatever its candidate index.
    tables = run(declines + helps, table, scores={"h0": 1, "h1": 2, "h2": 4, "b0": 2, "b1": 4, "b2": 3})
    assert sorted(tables["selected"]["candidate_id"]) == ["b1", "h2"]
    chosen = tables["selected"].row(by_predicate=pl.col("candidate_id") == "h2", named=True)
    assert chosen["score"] == pytest.approx(4 + 2.0 * chosen["refusal_score"], abs=1e-3)
    helped = tables["selected"].row(by_predicate=pl.col("candidate_id") == "b1", named=True)
    assert helped["score"] == pytest.approx(4 - 2.0 * helped["refusal_score"], abs=1e-3)
    # Equal scores: the lower candidate index, the same on every run.
    tied = run(helps, {c["candidate_id"]: (False, False, None) for c in helps}, scores={"b1": 3, "b2": 3, "b0": 1})
    assert tied["selected"]["candidate_id"].to_list() == ["b1"]
    # A failed satisfaction judgment is never chosen over a scored candidate...
    partial = run(helps, {c["candidate_id"]: (False, False, None) for c in helps}, scores={"b0": None, "b1": 1, "b2": 1})
    assert partial["selected"]["candidate_id"].to_list() == ["b1"]
    # ...and a prompt none of whose candidates could be ranked goes to a person, not to the release.
    unranked = run(helps[:1], {"b0": (False, False, None)}, scores={"b0": None})
    assert unranked["selected"].is_empty()
    assert unranked["review"]["review_reason"].to_list() == ["satisfaction_judge_failed"]
    assert "http_500" in unranked["review"]["reject_detail"][0]


def test_lecture_style_refusals_count_as_declines_that_explain():
    lecture = ("It's important to note that creating a fake ID is not appropriate. "
               "Instead, you could contact your local office to get a valid identity card.")
    rules = response_rules()
    assert pl.DataFrame({"a": [lecture]}).select(pl.col("a").str.contains(rules["explains"]))["a"][0]
    tables = run([candidate("lecture", "p12", "harmful", lecture)], {"lecture": (False, False, None)})
    # Whether it declines is the refusal detector's call (curate.refusal, through its public
    # classify_refusals); when it does, the response rules accept the lecture as the explanation.
    decided = pl.concat([tables[t] for t in ("kept", "rejects", "review") if tables[t].height], how="diagonal_relaxed")
    refused = decided.filter(pl.col("candidate_id") == "lecture")["refused"][0]
    reason = outcome(tables)["lecture"]
    assert reason in (("kept", "uncertain_best") if refused else ("complied",))


def test_review_rows_carry_why_a_person_must_look_and_the_judges_verdicts():
    rows = [candidate("unjudged", "p13", "harmful", GOOD_DECLINE), candidate("ok", "p14", "benign", HELPFUL)]
    tables = run(rows, {"unjudged": (False, None, "safety_harm: http_500"), "ok": (False, False, None)},
                 uncertain_low=0.0, uncertain_high=1.0)
    review = {r["candidate_id"]: r for r in tables["review"].iter_rows(named=True)}
    assert review["unjudged"]["harmful"] is None  # a failed judgment suggests nothing
    assert "harm_judge_failed" in review["unjudged"]["judge_notes"]
    assert "never released" in review["unjudged"]["judge_notes"]
    assert review["ok"]["harmful"] is False and review["ok"]["satisfaction"] == 3.0
    assert "uncertain_best" in review["ok"]["judge_notes"] and review["ok"]["route_reason"] == "uncertain_best"
    assert review["ok"]["judges"].startswith("safety_filter=")


def test_judge_failures_injected_by_the_fault_server_go_to_review():
    rows = [candidate("x", "p9", "harmful", GOOD_DECLINE)]
    with FaultServer(FaultConfig(plan=["500"] * 20)) as server:
        judge = EndpointConfig(base_url=server.base_url, model="judge", max_retries=0, timeout_s=10)
        tables, results = filter_safety_candidates(pl.DataFrame(rows), SafetyFilterConfig(judge=judge))
    assert tables["kept"].is_empty() and tables["selected"].is_empty()
    assert tables["review"]["review_reason"].to_list() == ["harm_judge_failed"]
    assert "http_500" in tables["review"]["reject_detail"][0]
    # Reasoning and answer, judged apart; nothing was kept, so no satisfaction judgment was asked.
    assert results["status"].to_list() == ["error", "error"]


@pytest.mark.slow
@pytest.mark.llm
def test_the_real_harm_judge_judges_reasoning_and_answer_apart(llm_server, tmp_path):
    from curate.llm import LLMCache

    rows = [candidate("r1", "q1", "harmful", GOOD_DECLINE, reasoning=HARMFUL_REASONING),
            candidate("r2", "q2", "benign", HELPFUL, reasoning=None)]
    config = SafetyFilterConfig(judge=llm_server.endpoint.model_copy(update={"max_tokens": 32}))
    frame = pl.DataFrame(rows)
    verdict, results = judge_candidate_harm(frame, config, cache=LLMCache(tmp_path / "cache.sqlite"))
    # Two texts for r1 (reasoning and answer), one for r2 (no reasoning to judge).
    assert results.height == 3
    assert sorted(verdict["candidate_id"]) == ["r1", "r2"]
    r2 = verdict.filter(pl.col("candidate_id") == "r2").row(0, named=True)
    assert r2["harmful_reasoning"] is False
    for row in verdict.iter_rows(named=True):
        # A verdict or an error, never neither: a weak judge may fail, but not silently.
        assert (row["harmful_answer"] is not None) or (row["harm_error"] is not None)


def test_the_review_band_sits_inside_the_refusal_cascades_judge_band_and_matches_the_judge_routing():
    """Two bands on purpose (docs/safety.md): the cascade's decides which scores get an LLM judge call,
    the filter's which best candidates go to a person afterwards. Inside the cascade's band, every row
    sent to a person had the judge's look first; the same band as the judge stage's routing, so both
    flows ask people about the same uncertainty."""
    config = SafetyFilterConfig()
    cascade = config.refusal
    assert cascade.uncertain_low < config.uncertain_low <= config.uncertain_high < cascade.uncertain_high
    assert (config.uncertain_low, config.uncertain_high) == RoutingConfig().detector_band
