"""The verification band: pairs just below the merge threshold go to the LLM judge; only a
clear yes merges; failed calls are error rows (nothing merged) that a rerun retries."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.llm import LLMCache
from curate.stages.dedupe import DedupeConfig, PairVerifier, dedupe_frame, parse_verdict

# Nothing listens on port 9 (discard): every call fails with a connection error.
DEAD = EndpointConfig(base_url="http://127.0.0.1:9/v1", model="none", max_retries=0, timeout_s=5)

ROWS = [
    # (question_id, text): two paraphrases and a same-topic different question
    ("q1", "Why did the Dalai Lama flee Tibet?"),
    ("q2", "Why did the Dalai Lama leave Tibet in 1959?"),
    ("q3", "Who will choose the next Dalai Lama?"),
]


def _frame() -> pl.DataFrame:
    return pl.DataFrame({"translation_id": [f"t-{q}" for q, _ in ROWS], "question_id": [q for q, _ in ROWS],
                         "language": ["en"] * len(ROWS), "text": [t for _, t in ROWS]})


# The threshold is set above every pair, so only the judge can merge: the band is every pair
# above 0.3.
BAND = DedupeConfig(model="minilm-bundled", threshold=0.99, verify=True, verify_above=0.3)


@pytest.mark.parametrize(("text", "same"), [('{"same_question": true}', True), ('ok {"same_question": false}', False)])
def test_verdicts_parse(text: str, same: bool) -> None:
    assert parse_verdict(text) is same


@pytest.mark.parametrize("text", ["yes", '{"same_question": "yes"}', ""])
def test_no_verdict_is_an_error(text: str) -> None:
    with pytest.raises(ValueError, match="same_question"):
        parse_verdict(text)


@pytest.mark.slow
def test_failed_judge_calls_are_error_rows_and_merge_nothing() -> None:
    out = dedupe_frame(_frame(), BAND, id_col="translation_id", verifier=PairVerifier(DEAD))
    checks = out.tables["verifications"]
    assert checks.height == 3 and (checks["status"] == "error").all()
    assert checks["error"].str.contains("connection").all(), checks["error"].to_list()
    assert out.tables["translations"].height == 3  # nothing merged on a failed call
    assert out.report["dedupe"]["verify_errors"] == 3


@pytest.mark.slow
@pytest.mark.llm
def test_band_pairs_go_to_the_local_llm_judge(llm_server, tmp_path: Path) -> None:
    endpoint = llm_server.endpoint.model_copy(update={"max_tokens": 32})
    with LLMCache(tmp_path / "llm.sqlite") as cache:
        failed = dedupe_frame(_frame(), BAND, id_col="translation_id", verifier=PairVerifier(DEAD, cache))
        assert (failed.tables["verifications"]["status"] == "error").all()
        # The rerun retries the failed calls (failures are never cached).
        out = dedupe_frame(_frame(), BAND, id_col="translation_id", verifier=PairVerifier(endpoint, cache))
        checks = out.tables["verifications"]
        assert checks.height == 3 and (checks["status"] == "ok").all(), checks["error"].to_list()
        assert not checks["cached"].any()
        assert checks["same_question"].is_not_null().all()
        # Whatever the small model said, the clusters follow its verdicts exactly.
        clusters = out.tables["clusters"]
        merged = clusters.filter(pl.col("duplicate_reason") == "semantic_verified")
        said_same = checks.filter(pl.col("same_question"))
        assert merged.height <= said_same.height
        if said_same.is_empty():
            assert out.tables["translations"].height == 3
        for row in merged.iter_rows(named=True):
            pair = {row["translation_id"], row["cluster_id"]}
            assert any(pair == {a, b} for a, b in said_same.select("a_id", "b_id").iter_rows())
        # Another rerun takes every verdict from the cache.
        again = dedupe_frame(_frame(), BAND, id_col="translation_id", verifier=PairVerifier(endpoint, cache))
        assert again.tables["verifications"]["cached"].all()
        assert again.tables["clusters"].equals(clusters)


@pytest.mark.slow
def test_dedupe_command_verifies_through_the_configured_llm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.workspace import Workspace

    monkeypatch.chdir(tmp_path)
    (tmp_path / "curate.toml").write_text(
        'workspace = "ws"\n[llm]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "none"\nmax_retries = 0\ntimeout_s = 5\n'
        '[stages.dedupe]\nmodel = "minilm-bundled"\nthreshold = 0.99\nverify_above = 0.3\n', encoding="utf-8")
    Workspace(tmp_path / "ws").run_stage("translate", lambda: {"translations": _frame().with_columns(status=pl.lit("ok"))})
    result = CliRunner().invoke(app, ["dedupe", "--verify", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "errors 3" in result.output  # the [llm] endpoint was used, and every failure reported
    checks = Workspace(tmp_path / "ws").read("dedupe/verifications")
    assert checks.height == 3 and (checks["status"] == "error").all()
    assert Workspace(tmp_path / "ws").read("dedupe/translations").height == 3
