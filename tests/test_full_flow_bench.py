"""bench/full_flow.py at a tiny size: the whole flow from translations to a verified export runs
against the fixed-latency stand-in and every step is reported, so the benchmark does not rot.

The stand-in (the fault injector, no faults) replaces the R1 endpoint only to replay fixed latency;
the stages themselves are tested against the real llama.cpp server in their own test files."""

from __future__ import annotations

import json

import polars as pl
import pytest

from bench.full_flow import FLOW_STAGES, STEPS, run_bench, table
from curate.pipeline import CURATION
from curate.release import ReleaseStore

TRANSLATIONS, K, C = 24, 4, 16


@pytest.mark.slow
def test_full_flow_bench_reports_every_step(tmp_path):
    report = run_bench(TRANSLATIONS, tmp_path, concurrency=C, latency=0.05, shard_size=8, slots=4, candidates=K)

    steps = {r["step"]: r for r in report["steps"]}
    # Every stage of the pipeline from answers on is run (a stage added to CURATION is picked up),
    # then review push, release, export and verify.
    names = [s.name for s in CURATION]
    assert FLOW_STAGES == names[names.index("answers"):]
    assert list(steps) == list(STEPS)
    for name, step in steps.items():
        assert step["peak_rss_gb"] > 0 and step["step_s"] >= 0, name
        assert "left_out" not in step, name

    answers, judge = steps["answers"], steps["judge"]
    assert answers["rows"] == {"candidates": TRANSLATIONS * K, "rejects": 0}
    assert judge["rows"]["judgments"] == TRANSLATIONS * K
    assert answers["rows_per_s"] > 0
    # Server side: answers sent one request per candidate, the judging stages (whichever of them
    # call the endpoint) two per candidate (satisfaction, harm), and the endpoint never saw more
    # than C at once.
    judging = [steps[s] for s in FLOW_STAGES[FLOW_STAGES.index("answers") + 1:] if steps[s].get("uses_llm")]
    assert judging, "no judging stage called the endpoint"
    assert answers["endpoint"]["requests"] == TRANSLATIONS * K
    assert sum(s["endpoint"]["requests"] for s in judging) >= 2 * TRANSLATIONS * K
    for step in (answers, *judging):
        assert 0 < step["endpoint"]["utilization"] <= 1.05
        assert 0 < step["endpoint"]["in_flight_utilization"] <= 1
        assert 0 < step["endpoint"]["max_in_flight"] <= C
    flow = report["flow"]
    llm = [s for s in FLOW_STAGES if steps[s].get("uses_llm")]
    assert flow["stages"] == FLOW_STAGES[FLOW_STAGES.index(llm[0]):FLOW_STAGES.index(llm[-1]) + 1]
    assert flow["requests"] == report["server"]["requests"]
    assert report["server"]["faults"] == {} and report["server"]["max_in_flight"] <= C

    # No person reviewed: the push went to the discarding stand-in, the release is a draft of the
    # routed best-of-K rows, and it exported and verified.
    push = steps["review_push"]
    assert push["pushed"] == push["routed"]["human"] > 0
    assert push["routed"]["not_chosen"] == TRANSLATIONS * (K - 1)
    store = ReleaseStore(tmp_path / "store")
    (version,) = store.versions()
    assert store.is_draft(version) and steps["release"]["rows"] == store.manifest(version)["rows"] == TRANSLATIONS
    exported = pl.concat([pl.read_parquet(p) for p in (tmp_path / "hf").rglob("*.parquet")])
    assert exported.height == TRANSLATIONS - store.read(version).filter(pl.col("split") == "test").height
    assert steps["verify"]["rows"] == TRANSLATIONS

    shown = table(report)
    for name in STEPS:
        assert f"| {name} |" in shown
    json.dumps(report, default=str)  # what --json writes
