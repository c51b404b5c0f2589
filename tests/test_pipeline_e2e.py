"""The whole curation chain, ingest -> blocked -> keywords -> questions -> translate -> dedupe ->
answers, through the Prefect curation flow, on real deccp seeds against the local LLM server.

Checks the contract, not quality: every stage's tables and manifests exist, lineage IDs connect
each candidate back to its seed, every translation ends somewhere with a reason, and a rerun
skips every stage without one LLM call. The config is relaxed so SmolLM2-135M's weak output
still reaches every stage (see tests/test_translate_chain.py and tests/test_answers_stage.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl
import pytest

from curate.workspace import Workspace

DATA = Path(__file__).resolve().parent.parent / "data"
N_SEEDS = 3

TABLES = {
    "ingest": ["seeds"],
    "blocked": ["probes", "seeds"],
    "keywords": ["keywords"],
    "questions": ["questions", "rejects"],
    "translate": ["translations"],
    "dedupe": ["translations", "clusters"],
    "answers": ["candidates", "rejects"],
}


def write_config(tmp_path: Path, base_url: str, model: str, seeds: Path) -> Path:
    config = tmp_path / "curate.toml"
    config.write_text(
        f'''workspace = "{tmp_path / 'ws'}"
languages = ["en", "zh"]

[llm]
base_url = "{base_url}"
model = "{model}"
max_concurrency = 2
max_retries = 1
timeout_s = 180
max_tokens = 64

[stages.orchestrate]
seeds = ["{seeds}"]
task_runner = "threads"
retries = 0
llm_slots = 2

[stages.blocked]
keep = "all"                 # a 135M model rarely refuses: keep every seed so later stages get input
overrides = {{ temperature = 0.0, max_tokens = 24 }}

[stages.keywords]
source = "all"
min_count = 1
max_keywords = 1
topics = "none"

[stages.questions]
per_keyword = 2
max_keywords = 1
seed_examples = 1
# Sampled, so SmolLM2 sometimes writes one 7-character "question" and nothing else (about 1 run
# in 4 ended with 0 questions): a seed makes the draw repeatable (offset per round by the LLM
# layer), and further rounds ask again for what is still missing.
max_rounds = 3
check_language = false
require_question_mark = false
require_keyword = false
overrides = {{ temperature = 0.7, max_tokens = 96, seed = 1 }}

[stages.translate]
max_attempts = 1
faithfulness_model = "none"
min_language_confidence = 0.0
overrides = {{ temperature = 0.2, max_tokens = 96 }}

[stages.dedupe]
model = "minilm-bundled"

[stages.answers]
candidates_per_prompt = 1
require_reasoning = false
min_answer_units = 1
language_check_min_chars = 100000
overrides = {{ temperature = 0.0, max_tokens = 200 }}   # shorter answers end truncated, i.e. rejected
''',
        encoding="utf-8",
    )
    return config


class LLMCallCounter:
    """Counts chat-completion requests the OpenAI SDK sends, passing each one through unchanged.

    Counted at the SDK client's `post`, where every chat request goes out (curate posts the body
    itself rather than through `chat.completions.create`: curate/llm/wire.py)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        from openai import AsyncOpenAI

        self.calls = 0
        original = AsyncOpenAI.post

        async def counted(client_self, path, *args, **kwargs):
            if path.rstrip("/").endswith("/chat/completions"):
                self.calls += 1
            return await original(client_self, path, *args, **kwargs)

        monkeypatch.setattr(AsyncOpenAI, "post", counted)


@pytest.mark.slow
@pytest.mark.llm
@pytest.mark.usefixtures("prefect_harness")
def test_curation_chain_end_to_end_on_deccp_seeds_with_the_local_server(tmp_path, llm_server, monkeypatch):
    from flows.curation import curation_flow

    lines = [ln for ln in (DATA / "deccp" / "censored.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(lines[:N_SEEDS]) + "\n", encoding="utf-8")
    config = write_config(tmp_path, llm_server.base_url, llm_server.endpoint.model, seeds)
    counter = LLMCallCounter(monkeypatch)

    started = time.perf_counter()
    first = curation_flow(str(config), until="answers")
    first_s = time.perf_counter() - started
    assert [s["stage"] for s in first] == list(TABLES)
    assert not any(s["skipped"] for s in first)
    assert counter.calls > 0

    ws = Workspace(tmp_path / "ws")
    for stage, tables in TABLES.items():
        manifest = ws.manifest(stage)
        assert manifest and manifest["status"] == "complete", stage
        for table in tables:
            assert table in manifest["outputs"], (stage, table)
            ws.read(f"{stage}/{table}")  # readable Parquet
    for stage in ("blocked", "questions", "translate", "answers"):
        assert ws.manifest(stage)["report"], stage

    seeds_df = ws.read("ingest/seeds")
    assert seeds_df.height == N_SEEDS
    probes = ws.read("blocked/probes")
    assert set(probes["seed_id"]) == set(seeds_df["seed_id"])  # every seed was probed
    assert ws.read("blocked/seeds").height == N_SEEDS  # keep = "all"

    keywords = ws.read("keywords/keywords")
    questions, question_rejects = ws.read("questions/questions"), ws.read("questions/rejects")
    translations = ws.read("translate/translations")
    kept = ws.read("dedupe/translations")
    candidates, answer_rejects = ws.read("answers/candidates"), ws.read("answers/rejects")
    assert keywords.height >= 1 and questions.height >= 1, "relaxed config must let questions through"
    assert translations.height >= 1 and candidates.height + answer_rejects.height >= 1

    # Lineage: candidate -> translation -> question -> keyword -> seed.
    assert set(keywords["seed_ids"].explode()) <= set(seeds_df["seed_id"])
    assert set(questions["keyword_id"]) <= set(keywords["keyword_id"])
    assert question_rejects.is_empty() or question_rejects["reject_reason"].is_not_null().all()
    assert set(translations["question_id"]) == set(questions["question_id"])
    assert set(kept["translation_id"]) <= set(translations["translation_id"])
    answered = pl.concat([candidates.select("candidate_id", "translation_id", "question_id"),
                          answer_rejects.select("candidate_id", "translation_id", "question_id")])
    chain = answered.join(translations.select("translation_id", pl.col("question_id").alias("tq")), on="translation_id")
    assert chain.height == answered.height and (chain["question_id"] == chain["tq"]).all()
    assert (candidates["status"] == "ok").all()
    assert answer_rejects.is_empty() or answer_rejects["reject_reason"].is_not_null().all()

    # Nothing vanishes: every translation row is not ok (with its error), or went through dedupe,
    # where it is kept or dropped with a reason; every kept row was answered (candidate or reject).
    not_ok = translations.filter(pl.col("status") != "ok")
    assert not_ok.is_empty() or not_ok["error"].is_not_null().all()
    ok_ids = set(translations.filter(pl.col("status") == "ok")["translation_id"])
    clusters = ws.read("dedupe/clusters")
    assert set(clusters["translation_id"]) == ok_ids
    assert clusters.filter(~pl.col("kept"))["duplicate_reason"].is_not_null().all()
    assert set(kept["translation_id"]) == set(clusters.filter(pl.col("kept"))["translation_id"])
    unanswered = set(kept.filter(pl.col("status") == "ok")["translation_id"]) - set(answered["translation_id"])
    assert not unanswered, f"translations with neither a candidate nor a reject: {unanswered}"

    # The run log says how busy the flow kept the endpoint, from its first stage to its last.
    (run_log,) = [json.loads(p.read_text()) for p in (tmp_path / "ws" / "runs").glob("*.json")]
    assert run_log["endpoint_utilization"]
    for use in run_log["endpoint_utilization"].values():
        assert 0 < use["utilization"] <= 1 and use["wall_s"] >= max(s["duration_s"] or 0 for s in first)

    # A rerun skips every stage and sends nothing to the model.
    calls_before = counter.calls
    second = curation_flow(str(config), until="answers")
    assert [s["stage"] for s in second] == list(TABLES)
    assert all(s["skipped"] for s in second)
    assert counter.calls == calls_before
    print(f"first run {first_s:.1f}s, {calls_before} LLM calls; rows: "
          f"seeds={seeds_df.height} keywords={keywords.height} questions={questions.height} "
          f"translations={translations.height} kept={kept.height} candidates={candidates.height} "
          f"answer_rejects={answer_rejects.height}")
