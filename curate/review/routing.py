"""Review routing: which judged answers people see, and whether the rest may be auto-accepted.

Every judged candidate gets one route (`route_candidates`), first match wins:

    not_chosen  `candidates = "best"` and the row is not its group's best-of-K choice: never
                pushed, never released
    human       null_score: any judge score is missing (a failed judge call) - never auto-decided
                uncertain:judges_disagree / uncertain:detector / uncertain:near_threshold
                audit: a deterministic random slice (audit_share per language) of the rows the
                       policy would decide, so the policy's precision can be measured
                no_rule: the policy neither accepts nor rejects it
                quota: a language x topic with fewer than `quota_per_language_topic` human rows
                       gets its lowest-keyed auto rows routed to people
    auto_accept / auto_reject   decided by the policy over the judge columns

`audit_gate` measures the auto-accept policy on the audited rows people decided: precision with a
Wilson lower bound; the policy is trusted for a language only when that bound reaches the target.
"""

from __future__ import annotations

import hashlib
import math
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.errors import CurateError
from curate.tables import CANDIDATES, JUDGMENTS, REVIEW_DECISIONS, ROUTING
from curate.workspace import StageOutput, StageResult, Workspace

ROUTING_SCHEMA = {
    "candidate_id": pl.String, "language": pl.String, "topic": pl.String, "policy_decision": pl.String,
    "route": pl.String, "route_reason": pl.String, "audit_key": pl.Float64,
}
GATE_SCHEMA = {
    "language": pl.String, "audited": pl.Int64, "audit_accepted": pl.Int64, "precision": pl.Float64,
    "precision_lower": pl.Float64, "target": pl.Float64, "trusted": pl.Boolean, "reason": pl.String,
}


class RoutingConfig(BaseModel):
    """`[stages.review.routing]`: who reviews what, and when the policy may decide alone."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Route judged candidates; without judge/judgments everything is pushed.")
    candidates: Literal["best", "all"] = Field(default="best", description="Review only each group's best-of-K choice, or all.")
    accept_above: float = Field(default=2.5, ge=0, le=4, description="Policy accepts satisfaction >= this (and not harmful, refused or wrong language).")
    reject_below: float = Field(default=1.5, ge=0, le=4, description="Policy rejects satisfaction <= this (or harmful, refused, wrong language).")
    near_threshold: float = Field(default=0.5, ge=0, description="Scores closer than this to either threshold go to people.")
    max_judge_spread: int = Field(default=1, ge=0, description="Judges whose satisfaction differs by more than this disagree.")
    detector_band: tuple[float, float] = Field(default=(0.3, 0.7), description="Refusal probabilities in this band go to people.")
    audit_share: float = Field(default=0.05, ge=0, le=1, description="Share of policy-decided rows per language that people audit.")
    audit_salt: str = Field(default="audit-v1", description="Changing it draws a new audit slice.")
    quota_per_language_topic: int = Field(default=1, ge=0, description="At least this many human rows per language x topic.")
    precision_target: float = Field(default=0.9, gt=0, le=1, description="Auto-accept is trusted when the audit precision's lower bound reaches this.")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="One-sided confidence of the Wilson lower bound.")

    @model_validator(mode="after")
    def _ordered(self) -> RoutingConfig:
        if self.reject_below >= self.accept_above:
            raise ValueError("reject_below must be lower than accept_above")
        if not 0 <= self.detector_band[0] <= self.detector_band[1] <= 1:
            raise ValueError("detector_band must be (low, high) with 0 <= low <= high <= 1")
        return self


def audit_key(candidate_id: str, salt: str) -> float:
    """A uniform number in [0, 1) from the id: the same row is (or is not) audited on every run.

    Applied per row (`map_elements`, about 4 µs a candidate): polars has no sha256 expression, and its
    own `hash` is another function (and not stable across versions), so replacing this would draw
    another audit slice for every existing workspace."""
    digest = hashlib.sha256(f"{salt}\x1f{candidate_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def policy_expr(config: RoutingConfig) -> pl.Expr:
    """auto_accept / auto_reject / null from the judge columns (null scores give null)."""
    sat, harmful, refused = pl.col("satisfaction"), pl.col("harmful").fill_null(False), pl.col("refused").fill_null(False)
    wrong_language = (pl.col("language_match") == False).fill_null(False)  # noqa: E712 - null means "could not tell"
    return (
        pl.when(harmful | refused | wrong_language | (sat <= config.reject_below)).then(pl.lit("auto_reject"))
        .when(sat >= config.accept_above).then(pl.lit("auto_accept"))
        .otherwise(None)
    )


def _uncertain_expr(config: RoutingConfig) -> pl.Expr:
    sat = pl.col("satisfaction")
    low, high = config.detector_band
    near = ((sat - config.accept_above).abs() < config.near_threshold) | ((sat - config.reject_below).abs() < config.near_threshold)
    return (
        pl.when((pl.col("satisfaction_spread") > config.max_judge_spread) | pl.col("harm_disagree").fill_null(False))
        .then(pl.lit("uncertain:judges_disagree"))
        .when(pl.col("refusal_score").is_between(low, high)).then(pl.lit("uncertain:detector"))
        .when(near).then(pl.lit("uncertain:near_threshold"))
    )


def route_candidates(judgments: pl.DataFrame, config: RoutingConfig) -> pl.DataFrame:
    """One routing row per judged candidate (see the module docstring), in input order."""
    df = judgments.with_row_index("_row").with_columns(
        audit_key=pl.col("candidate_id").map_elements(lambda c: audit_key(c, config.audit_salt), return_dtype=pl.Float64),
        policy_decision=policy_expr(config),
        _uncertain=_uncertain_expr(config),
    )
    null_score = (pl.col("status") != "ok") | pl.col("satisfaction").is_null() | pl.col("refusal_score").is_null()
    if "harmful" in df.columns and df["harmful"].is_not_null().any():
        null_score = null_score | pl.col("harmful").is_null()
    not_chosen = ~pl.col("best").fill_null(False) if config.candidates == "best" else pl.lit(False)
    df = df.with_columns(
        route_reason=pl.when(not_chosen).then(pl.lit("not_chosen"))
        .when(null_score).then(pl.lit("null_score"))
        .when(pl.col("_uncertain").is_not_null()).then(pl.col("_uncertain"))
        .when(pl.col("policy_decision").is_null()).then(pl.lit("no_rule"))
        .otherwise(pl.lit("policy"))
    ).with_columns(policy_decision=pl.when(pl.col("route_reason") == "null_score").then(None).otherwise(pl.col("policy_decision")))
    # The audit slice: per language, the policy-decided rows with the smallest keys.
    decided = pl.col("route_reason") == "policy"
    rank = pl.col("audit_key").rank("ordinal").over(pl.col("language"), decided).cast(pl.Int64)
    n = decided.sum().over("language")
    take = (n.cast(pl.Float64) * config.audit_share).ceil().cast(pl.Int64)
    df = df.with_columns(
        route_reason=pl.when(decided & (rank <= take) & (config.audit_share > 0)).then(pl.lit("audit")).otherwise(pl.col("route_reason"))
    )
    df = _apply_quota(df, config)
    route = (
        pl.when(pl.col("route_reason") == "not_chosen").then(pl.lit("not_chosen"))
        .when(pl.col("route_reason") == "policy").then(pl.col("policy_decision"))
        .otherwise(pl.lit("human"))
    )
    return df.with_columns(route=route).sort("_row").select([pl.col(c).cast(t) for c, t in ROUTING_SCHEMA.items()])


def _apply_quota(df: pl.DataFrame, config: RoutingConfig) -> pl.DataFrame:
    if config.quota_per_language_topic == 0:
        return df
    group = [pl.col("language"), pl.col("topic").fill_null("(none)")]
    human = pl.col("route_reason").is_in(["not_chosen", "policy"]).not_()
    # Counted as Int64: a boolean sum is unsigned, and quota - have would wrap around to ~4e9
    # (every policy row routed to people) as soon as a group has more human rows than the quota.
    have = human.cast(pl.Int64).sum().over(group)
    policy = pl.col("route_reason") == "policy"
    rank = pl.col("audit_key").rank("ordinal").over([*group, policy]).cast(pl.Int64)
    short = (config.quota_per_language_topic - have).clip(0)
    return df.with_columns(route_reason=pl.when(policy & (rank <= short)).then(pl.lit("quota")).otherwise(pl.col("route_reason")))


# -- the audit gate ----------------------------------------------------------------------------------------------


def wilson_lower(successes: int, n: int, confidence: float) -> float | None:
    """One-sided Wilson score lower bound of a binomial proportion (None without observations)."""
    if n == 0:
        return None
    z = NormalDist().inv_cdf(confidence)
    p = successes / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - margin) / (1 + z * z / n))


def audit_gate(routing: pl.DataFrame, decisions: pl.DataFrame | None, config: RoutingConfig) -> pl.DataFrame:
    """Per language (and 'all'): how the audited auto-accept rows fared with people, and whether
    the policy is trusted there. Pending reviews do not count."""
    audited = routing.filter((pl.col("route_reason") == "audit") & (pl.col("policy_decision") == "auto_accept"))
    if decisions is not None and decisions.height:
        done = decisions.filter(pl.col("decision").is_in(["accepted", "rejected"])).select("candidate_id", "decision")
        audited = audited.join(done, on="candidate_id", how="inner")
    else:
        audited = audited.with_columns(decision=pl.lit(None, pl.String)).clear()
    languages = sorted(routing["language"].drop_nulls().unique().to_list())
    rows = []
    for language in [*languages, "all"]:
        part = audited if language == "all" else audited.filter(pl.col("language") == language)
        n, k = part.height, int((part["decision"] == "accepted").sum()) if part.height else 0
        lower = wilson_lower(k, n, config.confidence)
        trusted = lower is not None and lower >= config.precision_target
        if n == 0:
            reason = "no audited auto-accept row has a human decision yet"
        else:
            verb = "meets" if trusted else "is below"
            reason = (f"audit precision {k}/{n} = {k / n:.2f}, {config.confidence:.0%} lower bound {lower:.2f} "
                      f"{verb} the target {config.precision_target:.2f}")
        rows.append({"language": language, "audited": n, "audit_accepted": k, "precision": k / n if n else None,
                     "precision_lower": lower, "target": config.precision_target, "trusted": trusted, "reason": reason})
    return pl.DataFrame(rows, schema=GATE_SCHEMA)


# -- judge-human agreement -----------------------------------------------------------------------------------


def cohen_kappa(a: list, b: list, categories: list, weights: Literal["none", "quadratic"] = "none") -> float | None:
    """Cohen's kappa of two raters over paired labels (None when undefined: no pairs or one category only)."""
    if not a:
        return None
    index = {c: i for i, c in enumerate(categories)}
    k = len(categories)
    observed = np.zeros((k, k))
    for x, y in zip(a, b, strict=True):
        observed[index[x], index[y]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((k, k))
    w = ((i - j) ** 2 / (k - 1) ** 2) if weights == "quadratic" else (i != j).astype(float)
    denominator = (w * expected).sum()
    if denominator == 0:
        return None
    return float(1 - (w * observed).sum() / denominator)


def judge_human_agreement(judgments: pl.DataFrame, decisions: pl.DataFrame | None, config: RoutingConfig) -> pl.DataFrame:
    """Per language and question (accept, satisfaction, harmful): Cohen's kappa between the judge and
    the people's decision on every human-decided row (quadratic weights for satisfaction)."""
    schema = {"language": pl.String, "question": pl.String, "n": pl.Int64, "kappa": pl.Float64}
    if decisions is None or decisions.is_empty():
        return pl.DataFrame(schema=schema)
    done = decisions.filter(pl.col("decision").is_in(["accepted", "rejected"]))
    both = judgments.filter(pl.col("status") == "ok").join(done, on="candidate_id", how="inner").with_columns(
        judge_accept=policy_expr(config) == "auto_accept",
        human_harmful=pl.col("harmful_votes") * 2 > pl.col("n_reviews"),
    )
    rows = []
    for language in [*sorted(both["language"].unique().to_list()), "all"]:
        part = both if language == "all" else both.filter(pl.col("language") == language)
        pairs = {
            "accept": (part["judge_accept"].to_list(), part["accepted"].to_list(), [False, True], "none"),
            "harmful": (part["harmful"].to_list(), part["human_harmful"].to_list(), [False, True], "none"),
        }
        sat = part.filter(pl.col("satisfaction_mean").is_not_null())
        pairs["satisfaction"] = (sat["satisfaction"].round(0).cast(pl.Int64).to_list(),
                                 sat["satisfaction_mean"].round(0).cast(pl.Int64).to_list(), [0, 1, 2, 3, 4], "quadratic")
        for question, (judge, human, categories, weights) in pairs.items():
            kept = [(x, y) for x, y in zip(judge, human, strict=True) if x is not None and y is not None]
            rows.append({"language": language, "question": question, "n": len(kept),
                         "kappa": cohen_kappa([x for x, _ in kept], [y for _, y in kept], categories, weights)})
    return pl.DataFrame(rows, schema=schema)


def route_stage(judgments: pl.DataFrame, config: RoutingConfig) -> StageOutput:
    """The `route` workspace stage: route/routing, with counts per route, reason and language."""
    routing = route_candidates(judgments, config)

    def counts(*by: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for row in routing.group_by(*by).len().sort(*by).iter_rows():
            *keys, n = row
            node = out
            for key in keys[:-1]:
                node = node.setdefault(str(key), {})
            node[str(keys[-1])] = int(n)
        return out

    report = {"routed": routing.height, "by_route": counts("route"), "by_reason": counts("route_reason"),
              "by_language": counts("language", "route")}
    return StageOutput(tables={"routing": routing}, report=report)


def check_judgments_current(ws: Workspace) -> None:
    """Refuse judgments that scored other answers than the current `answers/candidates`.

    Routes, suggestions and auto-decisions are keyed by candidate id, and a rerun of the answers
    (new sampling settings, `--no-cache`, fixed failed calls) keeps the ids: judgments of the earlier
    texts would pre-fill reviewers' forms and auto-accept or exclude answers nobody judged."""
    judged = ((ws.manifest(JUDGMENTS.stage) or {}).get("inputs") or {}).get("candidates")
    current = ((ws.manifest(CANDIDATES.stage) or {}).get("outputs") or {}).get(CANDIDATES.table, {}).get("sha256")
    if judged and current and judged != current:
        raise CurateError(
            f"{ws.root}: '{JUDGMENTS}' scored an earlier '{CANDIDATES}' (the answers changed after the judge ran); "
            "run `curate judge` first, so that routing, suggestions and auto-decisions follow the current answers "
            "(or set [stages.review.routing] enabled = false to send every candidate to people without the judge)"
        )


def current_routing(ws: Workspace, config: RoutingConfig) -> StageResult | None:
    """Route the judged candidates as they stand now: the `route` stage over `judge/judgments`
    (skipped when the judgments and `config` are unchanged), after `check_judgments_current`.
    None when routing is off or nothing was judged. Push routes with it, and so does a release
    whose routing came from this stage, so a judge rerun since the last push cannot leave the
    release applying routes made for earlier answers."""
    if not config.enabled or not ws.has_table(JUDGMENTS):
        return None
    check_judgments_current(ws)
    return ws.run_stage(ROUTING.stage, route_stage, inputs={"judgments": str(JUDGMENTS)}, config=config)


def routing_status(routing: pl.DataFrame, judgments: pl.DataFrame, decisions: pl.DataFrame | None,
                   config: RoutingConfig) -> pl.DataFrame:
    """Per language (and 'all'): records routed to people and auto-decided, the audit-measured
    precision of auto-accept with its lower bound and verdict, and judge-human kappa per question."""
    gate = audit_gate(routing, decisions, config)
    kappa = judge_human_agreement(judgments, decisions, config)
    counts = routing.group_by("language", "route").len()
    rows = []
    for g in gate.iter_rows(named=True):
        language = g["language"]
        part = counts if language == "all" else counts.filter(pl.col("language") == language)
        by_route = {r: int(part.filter(pl.col("route") == r)["len"].sum()) for r in ("human", "auto_accept", "auto_reject", "not_chosen")}
        k = {q: kappa.filter((pl.col("language") == language) & (pl.col("question") == q))["kappa"].first()
             if kappa.height else None for q in ("accept", "satisfaction", "harmful")}
        rows.append({"language": language, "to_people": by_route["human"], "auto_accept": by_route["auto_accept"],
                     "auto_reject": by_route["auto_reject"], "not_chosen": by_route["not_chosen"], **g,
                     "kappa_accept": k["accept"], "kappa_satisfaction": k["satisfaction"], "kappa_harmful": k["harmful"]})
    return pl.DataFrame(rows, infer_schema_length=None)


def workspace_routing_status(ws: Workspace, config: RoutingConfig) -> pl.DataFrame | None:
    """`routing_status` from a workspace's route/routing, judge/judgments and review/decisions (None before routing)."""
    if not ws.has_table(ROUTING) or not ws.has_table(JUDGMENTS):
        return None
    decisions = ws.read(REVIEW_DECISIONS) if ws.has_table(REVIEW_DECISIONS) else None
    return routing_status(ws.read(ROUTING), ws.read(JUDGMENTS), decisions, config)
