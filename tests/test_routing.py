"""Review routing and the audit-precision gate on synthetic judged frames."""

from __future__ import annotations

import random

import polars as pl
import pytest

from curate.review.routing import (
    RoutingConfig,
    audit_gate,
    cohen_kappa,
    judge_human_agreement,
    route_candidates,
    wilson_lower,
)


def judged_frame(n: int, *, seed: int = 0, languages=("en", "zh", "ru"), topics=("history", "politics")) -> pl.DataFrame:
    """n judged best-of-K winners with integer single-judge scores, a few failures and disagreements."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        sat = rng.choice([0, 1, 2, 3, 4, 4, 4, 3])
        failed = i % 50 == 7
        rows.append({
            "candidate_id": f"c-{i}", "language": languages[i % len(languages)], "topic": topics[(i // 3) % len(topics)],
            "status": "error" if failed else "ok", "satisfaction": None if failed else float(sat),
            "satisfaction_spread": 0 if i % 40 else 2, "harmful": None if failed else (i % 97 == 5),
            "harm_disagree": False, "refused": sat == 0, "refusal_score": 0.9 if sat == 0 else (0.5 if i % 33 == 4 else 0.05),
            "language_match": True, "best": True,
        })
    return pl.DataFrame(rows, schema_overrides={"satisfaction": pl.Float64, "refusal_score": pl.Float64,
                                                "satisfaction_spread": pl.Int64, "harmful": pl.Boolean})


def test_every_row_gets_one_route_and_null_scores_always_go_to_people():
    frame = judged_frame(3000)
    routed = route_candidates(frame, RoutingConfig())
    assert routed.height == 3000 and routed["candidate_id"].to_list() == frame["candidate_id"].to_list()
    assert set(routed["route"].unique()) <= {"human", "auto_accept", "auto_reject", "not_chosen"}
    failed = routed.join(frame.filter(pl.col("status") == "error").select("candidate_id"), on="candidate_id", how="semi")
    assert failed.height == 60 and (failed["route"] == "human").all() and (failed["route_reason"] == "null_score").all()
    assert failed["policy_decision"].is_null().all()
    # Disagreeing judges, the detector's uncertain band and the grey zone (satisfaction 2) go to people.
    reasons = dict(routed.group_by("route_reason").len().iter_rows())
    assert reasons["uncertain:judges_disagree"] > 0 and reasons["uncertain:detector"] > 0 and reasons["no_rule"] > 0
    # (A harmful answer is rejected by the policy whatever its satisfaction.)
    grey = routed.join(frame.filter((pl.col("satisfaction") == 2) & (pl.col("status") == "ok") & ~pl.col("harmful")),
                       on="candidate_id", how="semi")
    assert grey.height > 300 and (grey["route"] == "human").all()
    # The policy decides the confident rest: with one row per language x topic as quota, most of it.
    assert reasons["policy"] > 2000 and reasons.get("quota", 0) == 0


def test_the_audit_slice_is_five_percent_per_language_and_deterministic():
    frame = judged_frame(3000)
    routed = route_candidates(frame, RoutingConfig())
    for language in ("en", "zh", "ru"):
        part = routed.filter(pl.col("language") == language)
        decided = part.filter(pl.col("route_reason").is_in(["policy", "audit", "quota"]))
        audited = part.filter(pl.col("route_reason") == "audit").height
        assert audited == pytest.approx(0.05 * decided.height, abs=1.0)
    # Same ids, shuffled: the same rows are audited; another salt draws another slice.
    again = route_candidates(frame.sample(fraction=1.0, shuffle=True, seed=3), RoutingConfig())
    audited = set(routed.filter(pl.col("route_reason") == "audit")["candidate_id"])
    assert set(again.filter(pl.col("route_reason") == "audit")["candidate_id"]) == audited
    other = route_candidates(frame, RoutingConfig(audit_salt="other"))
    assert set(other.filter(pl.col("route_reason") == "audit")["candidate_id"]) != audited
    # Audited rows keep the decision the policy would have made, so its precision can be measured.
    assert routed.filter(pl.col("route_reason") == "audit")["policy_decision"].is_not_null().all()


def test_quotas_give_every_language_and_topic_human_rows():
    # All confident accepts: without the quota only the audit slice would reach people.
    frame = judged_frame(600).with_columns(satisfaction=pl.lit(4.0), satisfaction_spread=pl.lit(0), status=pl.lit("ok"),
                                           harmful=pl.lit(False), refused=pl.lit(False), refusal_score=pl.lit(0.01))
    routed = route_candidates(frame, RoutingConfig(quota_per_language_topic=10, audit_share=0.0))
    human = routed.filter(pl.col("route") == "human").group_by("language", "topic").len()
    assert human.height == 6 and (human["len"] == 10).all()
    assert (routed.filter(pl.col("route") == "human")["route_reason"] == "quota").all()
    assert routed.filter(pl.col("route") == "auto_accept").height == 600 - 60


def test_a_group_with_more_human_rows_than_its_quota_keeps_its_auto_decisions():
    # Confident accepts, with a 5% audit: each language x topic already has more audited (human)
    # rows than the quota of 1, so nothing is added for the quota and the rest stays auto-accepted.
    frame = judged_frame(2400).with_columns(satisfaction=pl.lit(4.0), satisfaction_spread=pl.lit(0), status=pl.lit("ok"),
                                            harmful=pl.lit(False), refused=pl.lit(False), refusal_score=pl.lit(0.01))
    routed = route_candidates(frame, RoutingConfig(quota_per_language_topic=1, audit_share=0.05))
    reasons = dict(routed.group_by("route_reason").len().iter_rows())
    assert reasons == {"audit": 120, "policy": 2280}
    assert routed.filter(pl.col("route") == "auto_accept").height == 2280
    audited = dict(routed.filter(pl.col("route_reason") == "audit").group_by("language", "topic").len()
                   .select(pl.concat_str("language", "topic"), "len").iter_rows())
    assert len(audited) == 6 and min(audited.values()) > 1
    # A quota above what the audit gives: each group is topped up to exactly the quota.
    routed = route_candidates(frame, RoutingConfig(quota_per_language_topic=30, audit_share=0.05))
    human = dict(routed.filter(pl.col("route") == "human").group_by("language", "topic").len()
                 .select(pl.concat_str("language", "topic"), "len").iter_rows())
    assert human == {group: 30 for group in audited}
    quota = dict(routed.filter(pl.col("route_reason") == "quota").group_by("language", "topic").len()
                 .select(pl.concat_str("language", "topic"), "len").iter_rows())
    assert quota == {group: 30 - n for group, n in audited.items()}


def test_only_best_of_k_choices_are_routed_by_default():
    frame = judged_frame(30).with_columns(best=pl.col("candidate_id").is_in(["c-1", "c-2"]))
    routed = route_candidates(frame, RoutingConfig())
    assert set(routed.filter(pl.col("route") != "not_chosen")["candidate_id"]) == {"c-1", "c-2"}
    assert (route_candidates(frame, RoutingConfig(candidates="all"))["route"] != "not_chosen").all()


def test_policy_rejects_harm_refusal_and_wrong_language():
    frame = judged_frame(6).with_columns(satisfaction=pl.lit(4.0), status=pl.lit("ok"), refusal_score=pl.lit(0.01),
                                         refused=pl.lit(False), harmful=pl.lit(False), satisfaction_spread=pl.lit(0))
    frame = frame.with_columns(
        harmful=pl.col("candidate_id") == "c-0", refused=pl.col("candidate_id") == "c-1",
        language_match=pl.col("candidate_id") != "c-2",
    )
    decisions = dict(route_candidates(frame, RoutingConfig(quota_per_language_topic=0, audit_share=0))
                     .select("candidate_id", "route").iter_rows())
    assert [decisions[f"c-{i}"] for i in range(6)] == ["auto_reject"] * 3 + ["auto_accept"] * 3


def test_wilson_lower_bound():
    assert wilson_lower(0, 0, 0.95) is None
    assert wilson_lower(10, 10, 0.95) == pytest.approx(0.7863, abs=1e-3)
    assert wilson_lower(95, 100, 0.95) == pytest.approx(0.9, abs=0.01)
    assert wilson_lower(950, 1000, 0.95) > wilson_lower(95, 100, 0.95)


def _decisions(routing: pl.DataFrame, accept_share: float, seed: int = 1) -> pl.DataFrame:
    rng = random.Random(seed)
    audited = routing.filter(pl.col("route_reason") == "audit")
    accepted = [rng.random() < accept_share for _ in range(audited.height)]
    return pl.DataFrame({"candidate_id": audited["candidate_id"], "decision": ["accepted" if a else "rejected" for a in accepted],
                         "accepted": accepted})


def test_the_gate_trusts_auto_accept_only_when_the_audit_lower_bound_reaches_the_target():
    frame = judged_frame(20000, languages=("en", "zh"))
    config = RoutingConfig(precision_target=0.9)
    routed = route_candidates(frame, config)
    good = audit_gate(routed, _decisions(routed, 1.0), config)
    assert good.filter(pl.col("language") == "all")["trusted"].item() is True
    assert good.filter(pl.col("language") == "en")["audited"].item() > 100
    poor = audit_gate(routed, _decisions(routed, 0.8), config)
    row = poor.filter(pl.col("language") == "en").row(0, named=True)
    assert row["trusted"] is False and row["precision_lower"] < 0.9 and "is below the target 0.90" in row["reason"]
    nothing = audit_gate(routed, None, config)
    assert not nothing["trusted"].any() and nothing["reason"].str.contains("no audited").all()


def test_a_small_audit_cannot_earn_trust_even_when_every_row_was_accepted():
    frame = judged_frame(300, languages=("en",))
    routed = route_candidates(frame, RoutingConfig())
    gate = audit_gate(routed, _decisions(routed, 1.0), RoutingConfig())
    row = gate.filter(pl.col("language") == "en").row(0, named=True)
    assert row["precision"] == 1.0 and row["trusted"] is False  # a handful of audits is not evidence


def test_cohen_kappa():
    assert cohen_kappa([1, 0, 1, 0], [1, 0, 1, 0], [0, 1]) == pytest.approx(1.0)
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 1, 0], [0, 1]) == pytest.approx(0.0)
    assert cohen_kappa([1, 1], [1, 1], [0, 1]) is None
    assert cohen_kappa([4, 3, 0], [4, 2, 0], [0, 1, 2, 3, 4], "quadratic") > cohen_kappa([4, 3, 0], [0, 2, 4], [0, 1, 2, 3, 4], "quadratic")


def test_judge_human_agreement_per_language_and_question():
    frame = judged_frame(40, languages=("en",))
    decisions = frame.filter(pl.col("status") == "ok").select(
        "candidate_id", accepted=pl.col("satisfaction") >= 3,
        decision=pl.when(pl.col("satisfaction") >= 3).then(pl.lit("accepted")).otherwise(pl.lit("rejected")),
        satisfaction_mean=pl.col("satisfaction"), harmful_votes=pl.col("harmful").cast(pl.Int64), n_reviews=pl.lit(1),
    )
    agreement = judge_human_agreement(frame, decisions, RoutingConfig())
    sat = agreement.filter((pl.col("language") == "en") & (pl.col("question") == "satisfaction")).row(0, named=True)
    assert sat["n"] == 39 and sat["kappa"] == pytest.approx(1.0)
    assert set(agreement["question"]) == {"accept", "satisfaction", "harmful"}


def test_judge_report_plots_calibration_and_distributions(tmp_path):
    from curate.judge.report import calibration_table, write_judge_report
    from curate.review.routing import routing_status

    frame = judged_frame(300)
    decisions = frame.filter(pl.col("status") == "ok").select(
        "candidate_id", accepted=pl.col("satisfaction") >= 3,
        decision=pl.when(pl.col("satisfaction") >= 3).then(pl.lit("accepted")).otherwise(pl.lit("rejected")),
        satisfaction_mean=pl.col("satisfaction"), harmful_votes=pl.lit(0), n_reviews=pl.lit(1),
    )
    table = calibration_table(frame, decisions)
    overall = {r["score"]: r["rate"] for r in table.filter(pl.col("language") == "all").iter_rows(named=True)}
    assert overall[4] == 1.0 and overall[0] == 0.0
    status = routing_status(route_candidates(frame, RoutingConfig()), frame, decisions, RoutingConfig())
    assert set(status["language"]) == {"en", "zh", "ru", "all"}
    path = write_judge_report(tmp_path / "report.html", frame, decisions, status, {"judges": [{"name": "a", "model": "m"}]})
    html = path.read_text(encoding="utf-8")
    assert html.count("<svg") == 3 and 'id="chart-calibration"' in html and "http://" not in html.replace("http://www.w3.org", "")
    assert "Calibration against human verdicts" in html and "a = m" in html
    empty = write_judge_report(tmp_path / "empty.html", frame, None, None, {}).read_text(encoding="utf-8")
    assert "No human verdicts yet" in empty and empty.count("<svg") == 2
