"""Incremental vs full review pull on a large campaign, in the same run, against the same server.

A campaign of N records (default 10,000) of which all but K (default 100) already carry a submitted
response and were pulled. Then K new responses arrive the way the Argilla UI sends them (one
`POST /api/v1/records/{id}/responses` each, with the annotator's own key). Timed:

1. incremental pull (`curate review pull`): must find all K;
2. incremental pull again with nothing new (the common case of a periodic sync);
3. full pull (`curate review pull --full`): every reviewed record;
4. the raw argilla SDK reading the same campaign with responses (`dataset.records(with_responses=True)`).

Setup creates the records with their responses in the same bulk requests (setup is not measured).
Needs the local stack (`bash scripts/argilla-stack.sh start`). Run:
    nice -n 10 uv run python bench/review_pull_bench.py --records 10000 --new 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.argilla_bench import synthetic_candidates  # noqa: E402
from curate.review.client import MAX_BULK_RECORDS, ArgillaClient  # noqa: E402
from curate.review.config import DecisionRule  # noqa: E402
from curate.review.pull import pull_workspace  # noqa: E402
from curate.review.push import ensure_dataset, record_payloads, review_frame  # noqa: E402
from curate.review.settings import load_review_settings  # noqa: E402
from curate.workspace import Workspace  # noqa: E402
from tests.fixtures.argilla_stack import LEGACY, read_credentials  # noqa: E402

VALUES = {"accept": {"value": "accept"}, "satisfaction": {"value": 3}, "harmful": {"value": "no"}}


def owner_key() -> str:
    return (os.environ.get("CURATE_ARGILLA_OWNER_API_KEY") or read_credentials().get("CURATE_ARGILLA_OWNER_API_KEY")
            or LEGACY["CURATE_ARGILLA_OWNER_API_KEY"])


def timed_pull(ws: Workspace, client: ArgillaClient, campaign: str, workspace: str, *, full: bool) -> dict:
    started = time.perf_counter()
    out = pull_workspace(ws, client, campaign=campaign, workspace=workspace, rule=DecisionRule(), full=full)
    report = out.manifest["report"]
    state = report["incremental"][campaign]
    return {"seconds": round(time.perf_counter() - started, 2), "mode": state["mode"],
            "records_downloaded": state["records_fetched"], "responses_fetched": report["pull"]["fetched"],
            "new": report["pull"]["new"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--api-url", default="http://127.0.0.1:6900")
    parser.add_argument("--workspace", default="curate")
    args = parser.parse_args()
    n, k = args.records, args.new
    settings = load_review_settings(REPO / "annotations" / "review.toml")
    client = ArgillaClient(args.api_url, owner_key(), timeout_s=600)
    annotator = next(u for u in client.request("GET", "/api/v1/users")["items"] if u["username"] == "annotator1")
    campaign = f"bench-pull-{uuid.uuid4().hex[:8]}"
    results: dict = {"records": n, "new_responses": k, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                     "load_before": os.getloadavg()}
    try:
        started = time.perf_counter()
        ds = ensure_dataset(client, campaign, args.workspace, settings, min_submitted=1, link={})
        payloads = record_payloads(review_frame(synthetic_candidates(n)), settings)
        for start in range(0, n, MAX_BULK_RECORDS):
            items = []
            for i, p in enumerate(payloads[start:start + MAX_BULK_RECORDS], start):
                item = {key: value for key, value in p.items() if key != "_hash"}
                if i < n - k:  # already reviewed before the timed part
                    item["responses"] = [{"user_id": annotator["id"], "values": VALUES, "status": "submitted"}]
                items.append(item)
            client.upsert_records(ds["id"], items)
        waiting = [r["id"] for r in client._iter_all_records(ds["id"], responses=False)
                   if r["status"] == "pending"]
        results["setup_s"] = round(time.perf_counter() - started, 1)
        with tempfile.TemporaryDirectory() as tmp:
            ws = Workspace(Path(tmp) / "ws")
            results["first_pull"] = timed_pull(ws, client, campaign, args.workspace, full=False)
            with ArgillaClient(args.api_url, annotator["api_key"]) as ui:
                for record_id in waiting:
                    ui.request("POST", f"/api/v1/records/{record_id}/responses",
                               json={"values": VALUES, "status": "submitted"})
            results["incremental"] = timed_pull(ws, client, campaign, args.workspace, full=False)
            results["incremental_nothing_new"] = timed_pull(ws, client, campaign, args.workspace, full=False)
            results["full"] = timed_pull(ws, client, campaign, args.workspace, full=True)
        import argilla as rg  # heavy import (datasets, hub client): only for the baseline

        started = time.perf_counter()
        sdk = rg.Argilla(api_url=args.api_url, api_key=owner_key())
        count = sum(len(r.responses) > 0 for r in sdk.datasets(name=campaign, workspace=args.workspace)
                    .records(with_responses=True, batch_size=1000))
        results["sdk_read_all"] = {"seconds": round(time.perf_counter() - started, 2), "records_with_responses": count}
        results["load_after"] = os.getloadavg()
    finally:
        ds = client.find_dataset(campaign, client.workspace_id(args.workspace))
        if ds:
            client.delete_dataset(ds["id"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
