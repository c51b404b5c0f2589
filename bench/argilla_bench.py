"""Push throughput and unchanged re-sync time: `curate review push` vs the raw argilla SDK.

Both sides log the same N synthetic candidate records (same fields, metadata and questions from
annotations/review.toml) into their own fresh dataset on the same server, in the same run:

1. first push of N records: curate (REST bulk upsert + ledger) vs `Dataset.records.log`;
2. re-sync of the same, unchanged N records: curate (ledger skips them) vs the SDK's upsert;
3. the same re-sync through the CLI (`uv run curate review push`), process start included.

Needs the local stack: `bash scripts/argilla-stack.sh start`. Run:
    uv run python bench/argilla_bench.py --records 3000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.review.client import ArgillaClient  # noqa: E402
from curate.review.push import push_workspace, record_payloads, review_frame  # noqa: E402
from curate.review.settings import ReviewSettings, load_review_settings  # noqa: E402
from curate.tables import CANDIDATES  # noqa: E402
from curate.workspace import Workspace  # noqa: E402


def synthetic_candidates(n: int) -> pl.DataFrame:
    languages = ["en", "zh", "es", "fr", "de", "ru"]
    return pl.DataFrame({
        "candidate_id": [f"cand-{i:07d}" for i in range(n)],
        "translation_id": [f"tr-{i // 2}" for i in range(n)],
        "question_id": [f"q-{i // 4}" for i in range(n)],
        "language": [languages[i % len(languages)] for i in range(n)],
        "prompt": [f"Question {i}: what happened at the event number {i % 97}, and why is it disputed?" for i in range(n)],
        "candidate_index": [i % 2 for i in range(n)],
        "model": ["bench-model"] * n,
        "reasoning": [("The user asks about a contested event. " * 8) + str(i) for i in range(n)],
        "answer": [("A balanced answer covering the main perspectives. " * 6) + str(i) for i in range(n)],
        "finish_reason": ["stop"] * n,
        "status": ["ok"] * n,
        "topic": [f"topic-{i % 12}" for i in range(n)],
        "keyword": [f"keyword-{i % 40}" for i in range(n)],
    })


def sdk_settings(settings: ReviewSettings):
    import argilla as rg

    questions = []
    for q in settings.questions:
        if q.type == "label":
            questions.append(rg.LabelQuestion(name=q.name, title=q.title, labels=q.labels, required=q.required))
        elif q.type == "rating":
            questions.append(rg.RatingQuestion(name=q.name, title=q.title, values=q.values, required=q.required))
        else:
            questions.append(rg.TextQuestion(name=q.name, title=q.title, required=q.required, use_markdown=q.use_markdown))
    return rg.Settings(
        guidelines=settings.guidelines,
        fields=[rg.TextField(name=f.name, title=f.title, required=f.required, use_markdown=f.use_markdown)
                for f in settings.fields],
        questions=questions,
        metadata=[rg.TermsMetadataProperty(name=m.name, title=m.title) for m in settings.metadata],
        distribution=rg.TaskDistribution(min_submitted=settings.min_submitted),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--api-url", default=os.environ.get("CURATE_BENCH_ARGILLA_URL", "http://127.0.0.1:6900"))
    parser.add_argument("--workspace", default="curate")
    args = parser.parse_args()
    api_key = os.environ.setdefault("ARGILLA_API_KEY", "argilla.apikey")
    settings = load_review_settings(REPO / "annotations" / "review.toml")
    n = args.records
    tag = uuid.uuid4().hex[:8]
    results: dict = {"records": n, "batch_size": args.batch_size, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "python": platform.python_version()}

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        with ws.locked():
            ws.run_stage("answers", lambda: {"candidates": synthetic_candidates(n)}, force=True)
        campaign = f"bench-curate-{tag}"
        client = ArgillaClient(args.api_url, api_key)
        kwargs = dict(campaign=campaign, workspace=args.workspace, min_submitted=1, batch_size=args.batch_size)
        try:
            started = time.perf_counter()
            first = push_workspace(ws, client, settings, **kwargs)
            results["curate_push_s"] = round(time.perf_counter() - started, 2)
            results["curate_push_records_per_s"] = round(first.pushed / results["curate_push_s"], 1)

            started = time.perf_counter()
            again = push_workspace(ws, client, settings, **kwargs)
            results["curate_resync_unchanged_s"] = round(time.perf_counter() - started, 3)
            assert again.pushed == 0 and again.unchanged == n, again

            config = Path(tmp) / "curate.toml"
            config.write_text(f'workspace = "{ws.root}"\n[argilla]\napi_url = "{args.api_url}"\nworkspace = "{args.workspace}"\n'
                              f'[stages.review]\ncampaign = "{campaign}"\nbatch_size = {args.batch_size}\n', encoding="utf-8")
            started = time.perf_counter()
            subprocess.run(["uv", "run", "--quiet", "curate", "review", "push", "--config", str(config)],
                           cwd=REPO, check=True, capture_output=True)
            results["curate_cli_resync_unchanged_s"] = round(time.perf_counter() - started, 2)

            # The raw SDK, same records, its own dataset.
            import argilla as rg

            started = time.perf_counter()
            sdk = rg.Argilla(api_url=args.api_url, api_key=api_key)
            dataset = rg.Dataset(name=f"bench-sdk-{tag}", workspace=args.workspace, settings=sdk_settings(settings), client=sdk)
            dataset.create()
            results["sdk_client_and_dataset_s"] = round(time.perf_counter() - started, 2)
            payloads = record_payloads(review_frame(ws.read(CANDIDATES), run="bench"), settings)
            records = [rg.Record(id=p["external_id"], fields=p["fields"], metadata=p["metadata"]) for p in payloads]
            started = time.perf_counter()
            dataset.records.log(records, batch_size=args.batch_size)
            results["sdk_log_s"] = round(time.perf_counter() - started, 2)
            results["sdk_log_records_per_s"] = round(n / results["sdk_log_s"], 1)
            records = [rg.Record(id=p["external_id"], fields=p["fields"], metadata=p["metadata"]) for p in payloads]
            started = time.perf_counter()
            dataset.records.log(records, batch_size=args.batch_size)
            results["sdk_resync_unchanged_s"] = round(time.perf_counter() - started, 2)
            dataset.delete()
        finally:
            ds = client.find_dataset(campaign, client.workspace_id(args.workspace))
            if ds:
                client.delete_dataset(ds["id"])
            client.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
