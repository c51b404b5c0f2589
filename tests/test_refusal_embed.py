"""The refusal detector's embed modes (`model+embed`, `embed`): EmbeddingGemma-300M reply embeddings
with a logistic head stacked on the fastText model. Real EmbeddingGemma (scripts/setup.sh assembles
it), a head trained here on a small public subset, the shipped head, and the bad inputs."""

from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from curate.cli import app
from curate.errors import ConfigError
from curate.refusal import RefusalConfig, classify_refusals, describe_detector
from curate.refusal.data import load_sources
from curate.refusal.embed import SHIPPED_EMBED_HEAD, SHIPPED_EMBED_HEAD_SHA256, load_embed_head
from curate.refusal.model import load_detector, sha256_file
from curate.refusal.train import TrainParams
from curate.refusal.train_embed import EmbedHeadParams, train_embed_head
from curate.text.embeddings import embeddinggemma_path

# The shipped recipe with few hash buckets: quantizing 50k buckets dominates a tiny training's time.
SMALL_FASTTEXT = TrainParams(bucket=2000, quantize_cutoff=2000)
needs_gemma = pytest.mark.skipif(not (embeddinggemma_path() / "modules.json").is_file(),
                                 reason="EmbeddingGemma-300M not assembled (scripts/fetch-embeddinggemma.py; setup does)")

REFUSAL = "I'm sorry, but I can't help with that request."
ANSWER = ("Boiling an egg: put it in cold water, bring the water to the boil, then simmer for nine minutes for a "
          "firm yolk. Cool it in cold water before peeling.")
# A balanced essay that fastText is unsure about is where model+embed asks the head.
ESSAYS = [
    "There are several perspectives on this question. Supporters of the policy argue that it brings stability, "
    "while critics point to restrictions on free expression. It is important to consider the historical context "
    "and the views of all stakeholders, and to approach the topic with nuance and respect.",
    "I aim to provide a balanced analysis of this complex topic while avoiding partisan positions. Different "
    "governments and observers interpret these events differently, and reasonable people disagree.",
]


def small_subset() -> tuple[pl.DataFrame, list]:
    """Public SpeechMap replies of six models (up to 8 per label) and three opening views of each."""
    df, manifest = load_sources(("speechmap",))
    models = sorted(df.filter(pl.col("source") == "speechmap")["model"].unique().to_list())[:6]
    mine = df.filter(pl.col("model").is_in(models))
    replies = mine.filter(pl.col("source") == "speechmap").group_by("label", maintain_order=True).head(8)
    views = mine.filter(pl.col("source") == "speechmap/opening").group_by("model", maintain_order=True).head(3)
    return pl.concat([replies.select(df.columns), views.select(df.columns)]), manifest


@pytest.fixture(scope="module")
def small_head(tmp_path_factory):
    if not (embeddinggemma_path() / "modules.json").is_file():
        pytest.skip("EmbeddingGemma-300M not assembled")
    work = tmp_path_factory.mktemp("embed-head")
    df, manifest = small_subset()
    card = train_embed_head(df, manifest, work / "a" / "head.json", fasttext_sha256=load_detector().sha256,
                            params=EmbedHeadParams(views=12), cache_dir=work / "cache", fasttext_params=SMALL_FASTTEXT)
    return work, df, manifest, card


@pytest.mark.slow
@needs_gemma
def test_training_is_reproducible_and_resumes_from_the_embedding_cache(small_head):
    work, df, manifest, card = small_head
    # Second run: every embedding comes from the cache the first one filled; same bytes.
    train_embed_head(df, manifest, work / "b" / "head.json", fasttext_sha256=load_detector().sha256,
                     params=EmbedHeadParams(views=12), cache_dir=work / "cache", fasttext_params=SMALL_FASTTEXT)
    assert (work / "a" / "head.json").read_bytes() == (work / "b" / "head.json").read_bytes()
    assert card["data"]["rows"] == df.filter(pl.col("source") == "speechmap").height + 12
    assert card["data"]["rows_by_source_label"]["speechmap/opening/answered"] == 12
    assert card["embedding"]["model"] == "google/embeddinggemma-300m" and card["fasttext_sha256"] == load_detector().sha256
    assert [f["sha256"] for f in card["data"]["files"]] == [f["sha256"] for f in manifest]


@pytest.mark.slow
@needs_gemma
@pytest.mark.parametrize("mode", ["model+embed", "embed"])
def test_embed_modes_on_real_embeddinggemma(small_head, mode):
    work = small_head[0]
    config = RefusalConfig(mode=mode, embed_head_path=str(work / "a" / "head.json"))
    replies = [REFUSAL, ANSWER, *ESSAYS, "", None]
    out = classify_refusals(pl.DataFrame({"response": replies}, schema={"response": pl.String}), config)
    model_only = classify_refusals(pl.DataFrame({"response": replies}, schema={"response": pl.String}), RefusalConfig())
    # A head trained on 36 rows shows the plumbing, not accuracy (the shipped head's is tested below).
    scored = out.head(4)
    assert scored["refused"].to_list() == (scored["refusal_score"] >= config.threshold).to_list()
    assert scored.filter(pl.col("refused"))["refusal_kind"].is_in(["hard", "deflection", "official_line"]).all()
    band = model_only["refusal_score"].is_between(config.uncertain_low, config.uncertain_high).fill_null(False)
    expected = ["embed" if (mode == "embed" or b) else "model" for b in band[:4]]
    assert out["detector"][:4].to_list() == expected
    if mode == "model+embed":  # rows outside the band keep model mode's verdict exactly
        keep = ~band[:4]
        assert out["refusal_score"][:4].filter(keep).to_list() == model_only["refusal_score"][:4].filter(keep).to_list()
    assert out["refused"][4:].to_list() == [None, None]
    assert out["no_verdict_reason"][4:].to_list() == ["empty reply", "missing reply"]
    assert ((out["refusal_score"][:4] >= 0) & (out["refusal_score"][:4] <= 1)).all()
    described = describe_detector(config)
    assert described["mode"] == mode and described["embed_head"].startswith("refusal-embed-head@")
    assert described["model"] == load_detector().version and described["embedding_model"] == "google/embeddinggemma-300m"


def test_a_missing_embeddinggemma_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"EmbeddingGemma-300M \(google/embeddinggemma-300m\).*fetch-embeddinggemma\.py"):
        classify_refusals(pl.DataFrame({"response": [ANSWER]}), RefusalConfig(mode="model+embed"))


def test_a_missing_or_altered_head_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.json: refusal embed head not found.*--embed-head"):
        load_embed_head(str(tmp_path / "nope.json"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"name": "x"', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken\.json:1: embed head is not valid JSON"):
        load_embed_head(str(broken))
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"name": "x", "head": {}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="has no 'stack'"):
        load_embed_head(str(partial))


def test_the_shipped_head_is_pinned():
    assert sha256_file(SHIPPED_EMBED_HEAD) == SHIPPED_EMBED_HEAD_SHA256
    head = load_embed_head()
    assert head.card["fasttext_sha256"] == load_detector().sha256
    assert head.card["embedding"]["model"] == "google/embeddinggemma-300m"
    assert not any("r1" in f["path"].lower() for f in head.card["data"]["files"])


@pytest.mark.slow
@needs_gemma
def test_detect_refusals_cli_reports_the_embed_head(tmp_path):
    replies = tmp_path / "replies.jsonl"
    replies.write_text("\n".join(json.dumps({"response": r}) for r in [REFUSAL, ANSWER, *ESSAYS]) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["detect-refusals", str(replies), "--mode", "model+embed", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{"):])
    assert summary["mode"] == "model+embed" and summary["detector"]["embed_head"] == load_embed_head().version
    assert summary["rows"] == 4 and summary["refused"] >= 1
