"""What the judge's routing contributes to a release: auto decisions, gated by the audit.

- `auto_accept` rows are released (with n_reviews = 0) only for languages where the audit gate
  trusts the policy (curate.review.routing.audit_gate); elsewhere they are left out with the reason
  `auto_accept_untrusted` and the release says why.
- `auto_reject` and `not_chosen` (not the best of K) rows are left out under those names.
- Rows routed to people are decided by people, as without a judge.

A human decision on a row always wins over its route.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from curate.review.policy import DECISION_SCHEMA
from curate.review.routing import RoutingConfig, audit_gate

EXCLUDED_ROUTES = {"auto_reject": "auto_rejected", "not_chosen": "not_chosen"}


def auto_decisions(
    routing: pl.DataFrame, human: pl.DataFrame, gate_config: RoutingConfig, *, draft: bool = False,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """(decisions for rows people did not decide, report). `human` is resolve_reviews' output, the
    same decisions the release applies to reviewed rows."""
    gate = audit_gate(routing, human, gate_config)
    trusted = set(gate.filter(pl.col("trusted") & (pl.col("language") != "all"))["language"].to_list())
    undecided = routing.join(human.filter(pl.col("decision") != "pending").select("candidate_id"), on="candidate_id", how="anti")
    auto = undecided.filter(pl.col("route") == "auto_accept")
    decision = (
        pl.when(pl.col("route") == "auto_accept").then(
            pl.when(pl.col("language").is_in(list(trusted))).then(pl.lit("accepted")).otherwise(pl.lit("auto_accept_untrusted")))
        .when(pl.col("route").is_in(list(EXCLUDED_ROUTES))).then(pl.col("route").replace(EXCLUDED_ROUTES))
    )
    decided = undecided.with_columns(decision=decision).filter(pl.col("decision").is_not_null())
    if draft:
        # A draft shows what is still pending: untrusted auto-accepts stay in as pending, not out.
        decided = decided.filter(pl.col("decision") != "auto_accept_untrusted")
    decisions = decided.select(
        "candidate_id", n_reviews=pl.lit(0, pl.Int64), accept_votes=pl.lit(0, pl.Int64), reject_votes=pl.lit(0, pl.Int64),
        harmful_votes=pl.lit(0, pl.Int64), satisfaction_mean=pl.lit(None, pl.Float64),
        corrected_answer=pl.lit(None, pl.String), decision="decision", accepted=pl.col("decision") == "accepted",
    ).select([pl.col(c).cast(t) for c, t in DECISION_SCHEMA.items()])
    refused = {
        g["language"]: g["reason"] for g in gate.iter_rows(named=True)
        if g["language"] != "all" and not g["trusted"] and auto.filter(pl.col("language") == g["language"]).height
    }
    report = {
        "auto_accepted_ids": sorted(decided.filter(pl.col("decision") == "accepted")["candidate_id"].to_list()),
        "auto_accept_refused": refused,
        "audit": {g["language"]: {k: g[k] for k in ("audited", "audit_accepted", "precision", "precision_lower", "target", "trusted")}
                  for g in gate.iter_rows(named=True)},
        "audit_confidence": gate_config.confidence,
    }
    return decisions, report
