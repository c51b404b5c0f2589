"""A rerun of dedupe keeps the rows it kept (docs/dedupe.md, "Reruns keep what they kept").

The runner hands the stage its last dedupe/clusters while `keep` and `score_col` are unchanged;
rows kept then win their cluster over rows new to the rerun (a translation that failed the first
time), so the answers, and people's reviews of them, stay with the same row. Real CLI, real
workspace; the semantic case uses the real bundled all-MiniLM-L6-v2.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.config import load_config
from curate.errors import InputError
from curate.runner import Services, prepare
from curate.stages.declaration import Previous, Stage
from curate.stages.dedupe import STAGE as DEDUPE
from curate.stages.dedupe import DedupeConfig, dedupe_stage
from curate.tables import DEDUPE_CLUSTERS
from curate.workspace import Workspace

# Two questions whose Chinese translations are the same question after normalization; the first
# one's translation fails in run 1 and succeeds on the rerun, ahead of the row kept in run 1.
EXACT_ROWS = [
    ("q1", "en", "Is Taiwan a country?"),
    ("q1", "zh", "台湾是一个国家吗？"),
    ("q2", "en", "Is Taiwan a sovereign country?"),
    ("q2", "zh", "台湾是一个国家吗"),
    ("q3", "zh", "中国独立媒体的现状如何？"),
]
# Paraphrases all-MiniLM-L6-v2 scores above 0.88 (tests/test_dedupe_semantic.py).
SEMANTIC_ROWS = [
    ("q-tank", "en", "Who was the Tank Man at Tiananmen Square?"),
    ("q-tank2", "en", "Who was the man who stood in front of the tanks in Tiananmen Square?"),
    ("q-vpn", "en", "How do people in China get around the Great Firewall?"),
]


def translations(rows, failed: tuple[str, ...] = ()) -> pl.DataFrame:
    ids = [f"t-{qid}-{lang}" for qid, lang, _ in rows]
    return pl.DataFrame({
        "translation_id": ids,
        "question_id": [qid for qid, _, _ in rows],
        "language": [lang for _, lang, _ in rows],
        "text": [None if tid in failed else text for tid, (_, _, text) in zip(ids, rows, strict=True)],
        "status": ["error" if tid in failed else "ok" for tid in ids],
    })


def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dedupe_settings: str) -> Workspace:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "curate.toml").write_text(f'workspace = "ws"\n[stages.dedupe]\n{dedupe_settings}\n', encoding="utf-8")
    return Workspace(tmp_path / "ws")


def translate(ws: Workspace, frame: pl.DataFrame) -> None:
    """Stand-in for the translate stage's output (the stage itself is tested in test_translate*.py)."""
    ws.run_stage("translate", lambda: {"translations": frame})


def dedupe(*args: str) -> str:
    result = CliRunner().invoke(app, ["dedupe", "--quiet", *args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def kept(ws: Workspace) -> list[str]:
    return ws.read("dedupe/translations")["translation_id"].to_list()


def cluster_of(ws: Workspace, translation_id: str) -> dict:
    return ws.read("dedupe/clusters").filter(pl.col("translation_id") == translation_id).row(0, named=True)


def file_hashes(ws: Workspace) -> dict[str, str]:
    folder = ws.stage_dir("dedupe")
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_a_failed_translation_that_succeeds_on_rerun_does_not_displace_the_kept_row(tmp_path, monkeypatch) -> None:
    ws = workspace(tmp_path, monkeypatch, "semantic = false")
    translate(ws, translations(EXACT_ROWS, failed=("t-q1-zh",)))
    dedupe()
    assert "t-q2-zh" in kept(ws)

    translate(ws, translations(EXACT_ROWS))  # the rerun of translate fixed t-q1-zh, which comes first
    output = dedupe()
    assert "4 rows kept by the last run stay kept" in output
    assert kept(ws) == ["t-q1-en", "t-q2-en", "t-q2-zh", "t-q3-zh"]
    displaced = cluster_of(ws, "t-q1-zh")
    assert (displaced["kept"], displaced["cluster_id"], displaced["duplicate_reason"]) == (False, "t-q2-zh", "exact")
    assert cluster_of(ws, "t-q2-zh")["is_representative"]
    assert ws.manifest("dedupe")["report"]["dedupe"]["kept_by_last_run"] == 4
    assert "skipped" in dedupe()  # unchanged input and settings: nothing to redo

    # A first run over the same input is unchanged by this: input order decides, t-q1-zh is kept.
    (tmp_path / "fresh").mkdir()
    fresh = workspace(tmp_path / "fresh", monkeypatch, "semantic = false")
    translate(fresh, translations(EXACT_ROWS))
    dedupe()
    assert kept(fresh) == ["t-q1-en", "t-q1-zh", "t-q2-en", "t-q3-zh"]
    assert "kept_by_last_run" not in fresh.manifest("dedupe")["report"]["dedupe"]


def test_first_run_output_is_pinned_and_a_forced_rerun_rewrites_the_same_bytes(tmp_path, monkeypatch) -> None:
    ws = workspace(tmp_path, monkeypatch, "semantic = false")
    translate(ws, translations(EXACT_ROWS))
    dedupe()
    clusters = ws.read("dedupe/clusters").select("translation_id", "cluster_id", "cluster_size", "is_representative",
                                                 "kept", "duplicate_reason")
    assert clusters.rows() == [
        ("t-q1-en", "t-q1-en", 1, True, True, None),
        ("t-q1-zh", "t-q1-zh", 2, True, True, None),
        ("t-q2-en", "t-q2-en", 1, True, True, None),
        ("t-q2-zh", "t-q1-zh", 2, False, False, "exact"),
        ("t-q3-zh", "t-q3-zh", 1, True, True, None),
    ]
    assert ws.read("dedupe/translations").columns == ["translation_id", "question_id", "language", "text", "status",
                                                      "cluster_id", "is_representative"]
    first = file_hashes(ws)
    dedupe("--force")  # now with the first run's clusters as `previous`: a fixed point
    assert file_hashes(ws) == first


@pytest.mark.slow
def test_semantic_duplicate_keeps_the_row_kept_before_and_a_new_threshold_keeps_it_too(tmp_path, monkeypatch) -> None:
    ws = workspace(tmp_path, monkeypatch, 'model = "minilm-bundled"\nthreshold = 0.88')
    translate(ws, translations(SEMANTIC_ROWS, failed=("t-q-tank-en",)))
    dedupe()
    assert kept(ws) == ["t-q-tank2-en", "t-q-vpn-en"]

    translate(ws, translations(SEMANTIC_ROWS))
    dedupe()
    assert kept(ws) == ["t-q-tank2-en", "t-q-vpn-en"]
    displaced = cluster_of(ws, "t-q-tank-en")
    assert (displaced["kept"], displaced["cluster_id"], displaced["duplicate_reason"]) == (False, "t-q-tank2-en", "semantic")
    assert displaced["similarity_to_representative"] >= 0.88

    # A new threshold changes which rows are duplicates, not which one is wanted: still tank2.
    dedupe("--threshold", "0.85")
    assert kept(ws) == ["t-q-tank2-en", "t-q-vpn-en"]
    # Without the earlier run, input order keeps the Tank Man row.
    (tmp_path / "fresh").mkdir()
    fresh = workspace(tmp_path / "fresh", monkeypatch, 'model = "minilm-bundled"\nthreshold = 0.88')
    translate(fresh, translations(SEMANTIC_ROWS))
    dedupe()
    assert kept(fresh) == ["t-q-tank-en", "t-q-vpn-en"]


def test_a_new_keep_policy_chooses_every_cluster_afresh(tmp_path, monkeypatch) -> None:
    ws = workspace(tmp_path, monkeypatch, 'semantic = false\nkeep = "first"')
    translate(ws, translations(EXACT_ROWS, failed=("t-q1-zh",)))
    dedupe()
    translate(ws, translations(EXACT_ROWS))
    dedupe("--keep", "longest")  # "台湾是一个国家吗？" is one character longer than the row kept before
    assert "t-q1-zh" in kept(ws) and "t-q2-zh" not in kept(ws)
    assert "kept_by_last_run" not in ws.manifest("dedupe")["report"]["dedupe"]
    # From now on the longest-kept rows are the ones a rerun keeps.
    dedupe("--keep", "longest", "--force")
    assert "t-q1-zh" in kept(ws)
    assert ws.manifest("dedupe")["report"]["dedupe"]["kept_by_last_run"] == 4


def test_previous_clusters_through_the_stage_function_and_their_bad_shape() -> None:
    config = DedupeConfig(semantic=False)
    rows = translations(EXACT_ROWS)
    previous = pl.DataFrame({"translation_id": ["t-q1-zh", "t-q2-zh"], "kept": [False, True]})
    out = dedupe_stage(rows, config, previous=previous)
    assert "t-q2-zh" in out.tables["translations"]["translation_id"].to_list()
    assert out.report["dedupe"]["kept_by_last_run"] == 1
    assert dedupe_stage(rows, config).tables["translations"]["translation_id"].to_list() == [
        "t-q1-en", "t-q1-zh", "t-q2-en", "t-q3-zh"]
    with pytest.raises(InputError, match="kept") as err:
        dedupe_stage(rows, config, previous=pl.DataFrame({"translation_id": ["t-q2-zh"]}))
    assert err.value.path == str(DEDUPE_CLUSTERS)


def test_previous_must_be_one_of_the_stages_own_tables() -> None:
    with pytest.raises(ValueError, match="not one of its own tables"):
        Stage(name="answers", run=dedupe_stage, config=DedupeConfig, summary="x", previous=Previous(DEDUPE_CLUSTERS))


def test_the_runner_hands_dedupe_its_last_clusters_as_a_scan_read_only_when_the_stage_runs(tmp_path, monkeypatch) -> None:
    ws = workspace(tmp_path, monkeypatch, "semantic = false")
    translate(ws, translations(EXACT_ROWS, failed=("t-q1-zh",)))
    dedupe()
    cfg = load_config(tmp_path / "curate.toml")

    def prepared_previous():
        with Services(ws, cfg) as services:
            call, missing = prepare(DEDUPE, cfg, ws, services, have=ws.has_table)
        assert missing == []
        return call.kwargs["previous"]

    previous = prepared_previous()
    assert isinstance(previous, pl.LazyFrame)
    assert previous.collect().equals(ws.read("dedupe/clusters"))  # the same table the stage used to get

    # Prepare reads nothing: a clusters file damaged since the last run is only found when the stage
    # runs (its hash no longer matches, so it is not skipped), and named there.
    clusters = ws.table_path("dedupe", "clusters")
    clusters.write_bytes(b"not a parquet file")
    assert isinstance(prepared_previous(), pl.LazyFrame)
    result = CliRunner().invoke(app, ["dedupe", "--quiet"])
    assert result.exit_code != 0
    assert "dedupe/clusters" in f"{result.output} {result.exception}" and "cannot be read" in f"{result.output} {result.exception}"
