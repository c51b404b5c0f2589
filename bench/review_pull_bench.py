"""Incremental vs full review pull on a large campaign.

A campaign of N records (default 10,000) of which all but K (default 100) already have a submitted
response and were pulled. Then K new responses arrive the way the Argilla UI sends them (one REST
call each, completing a pending record). Timed, in the same run, against the same server:

1. incremental pull (`curate review pull`, from the stored watermark): what changed;
2. full pull (`curate review pull --full`): every reviewed record.

Both go through `curate.review.pull.pull_workspace` in process. Needs the local stack
(`bash scripts/argilla-stack.sh start`). Run:
    nice uv run python bench/review_pull_bench.py --records 10000 --new 100
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

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.argilla_bench import synthetic_candidates  # noqa: E402
from curate.review.client import ArgillaClient  # noqa: E402
from curate.review.config import DecisionRule  # noqa: E402
from curate.review.pull import WATERMARK_MARGIN, pull_workspace  # noqa: E402
from curate.review.push import push_workspace  # noqa: E402
from curate.review.settings import load_review_settings  # noqa: E402
from curate.tables import CANDIDATES  # noqa: E402
from curate.workspace import Workspace  # noqa: E402
from tests.fixtures.argilla_stack import LEGACY, read_credentials  # noqa: E402

VALUES = {"accept": {"value": "accept"}, "satisfaction": {"value": 3}, "harmful": {"value": "no"}}


def owner_key() -> str:
    return (os.environ.get("CURATE_ARGILLA_OWNER_API_KEY") or read_credentials().get("CURATE_ARGILLA_OWNER_API_KEY")
            or LEGACY["CURATE_ARGILLA_OWNER_API_KEY"])


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
    users = {u["username"]: u for u in client.request("GET", "/api/v1/users")["items"]}
    annotator = users["annotator1"]
    campaign = f"bench-pull-{uuid.uuid4().hex[:8]}"
    results: dict = {"records": n, "new_responses": k, "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        with ws.locked():
            ws.run_stage(CANDIDATES.stage, lambda: {CANDIDATES.table: synthetic_candidates(n)}, force=True)
        try:
            started = time.perf_counter()
            report = push_workspace(ws, client, settings, campaign=campaign, workspace=args.workspace,
                                    min_submitted=1, batch_size=500)
            ds = client.find_dataset(campaign, client.workspace_id(args.workspace))
            records = list(client._iter_all_records(ds["id"]))
            reviewed, waiting = records[: n - k], records[n - k:]
            # Setup only: the owner logs annotator1's responses on the first N-K records in bulk,
            # the last one after the watermark's look-back, as if reviews had trickled in over time
            # (otherwise every record reviewed within the look-back would count as recent).
            def respond(chunk: list[dict]) -> None:
                batch = [{"id": r["id"], "responses": [{"user_id": annotator["id"], "values": VALUES, "status": "submitted"}]}
                         for r in chunk]
                client.request("PUT", f"/api/v1/datasets/{ds['id']}/records/bulk", json={"items": batch})

            for start in range(0, len(reviewed) - 1, 500):
                respond(reviewed[start:min(start + 500, len(reviewed) - 1)])
            time.sleep(WATERMARK_MARGIN.total_seconds() + 1)
            respond(reviewed[-1:])
            results["setup_s"] = round(time.perf_counter() - started, 1)
            rule = DecisionRule()
            first = pull_workspace(ws, client, campaign=campaign, workspace=args.workspace, rule=rule)
            results["first_pull_responses"] = first.manifest["report"]["pull"]["fetched"]
            # K new responses the way the UI sends them: one REST call each, by the annotator.
            with httpx.Client(base_url=args.api_url, headers={"X-Argilla-Api-Key": annotator["api_key"]}, timeout=60) as ui:
                for r in waiting:
                    ui.post(f"/api/v1/records/{r['id']}/responses", json={"values": VALUES, "status": "submitted"}).raise_for_status()
            for mode, full in (("incremental", False), ("full", True)):
                started = time.perf_counter()
                out = pull_workspace(ws, client, campaign=campaign, workspace=args.workspace, rule=rule, full=full)
                pulled = out.manifest["report"]["pull"]
                results[mode] = {"seconds": round(time.perf_counter() - started, 2), "responses_fetched": pulled["fetched"],
                                 "new": pulled["new"]}
            results["pushed"] = report.pushed
        finally:
            ds = client.find_dataset(campaign, client.workspace_id(args.workspace))
            if ds:
                client.delete_dataset(ds["id"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
