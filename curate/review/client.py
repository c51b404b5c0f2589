"""A small client for Argilla's REST API (v1), the API the `argilla` SDK itself calls.

Why not the SDK here: importing it takes seconds (it pulls in `datasets` and the Hub client),
and push/pull need control over batching, retries and acknowledgements that `Dataset.records.log`
does not expose. Tests and the benchmark drive the SDK against the same server.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from curate.config import ArgillaConfig
from curate.errors import CurateError
from curate.review.settings import ReviewSettings

log = logging.getLogger(__name__)

MAX_BULK_RECORDS = 500  # the server's limit for PUT /records/bulk
PAGE_SIZE = 1000  # the server's limit for listing and search
SEARCH_WINDOW = 10_000  # offset+limit beyond this is refused by OpenSearch-style engines
TERMS_LIMIT = 250  # the server's limit on values in one terms filter
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class ArgillaError(CurateError):
    """The Argilla server refused a request or could not be reached (`status` is None then)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def api_key_from_env(config: ArgillaConfig, environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    key = env.get(config.api_key_env)
    if not key:
        raise CurateError(
            f"no Argilla API key: set the environment variable {config.api_key_env} "
            f"(named by [argilla] api_key_env) for the server at {config.api_url}"
        )
    return key


class ArgillaClient:
    def __init__(
        self,
        api_url: str,
        api_key: str,
        *,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ):
        self.api_url = api_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.http = httpx.Client(
            base_url=self.api_url,
            headers={"X-Argilla-Api-Key": api_key},
            timeout=timeout_s,
            transport=transport,
        )

    @classmethod
    def from_config(cls, config: ArgillaConfig, **kwargs: Any) -> ArgillaClient:
        return cls(config.api_url, api_key_from_env(config), **kwargs)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ArgillaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------
    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> Any:
        """One API call, retried with jittered exponential backoff on network errors, 429 and 5xx."""
        attempts = 1 + (self.max_retries if retry else 0)
        for attempt in range(1, attempts + 1):
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == attempts:
                    raise ArgillaError(f"{method} {self.api_url}{path}: {type(exc).__name__}: {exc}") from exc
                self._sleep(attempt, f"{type(exc).__name__}")
                continue
            if response.status_code in RETRY_STATUS and attempt < attempts:
                self._sleep(attempt, f"HTTP {response.status_code}")
                continue
            if response.status_code >= 400:
                detail = response.text[:500]
                if response.status_code == 401:
                    detail = "the API key was not accepted"
                raise ArgillaError(f"{method} {self.api_url}{path}: HTTP {response.status_code}: {detail}",
                                   response.status_code)
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    def request_once(self, method: str, path: str, *, took_effect: Callable[[], Any], **kwargs: Any) -> Any:
        """A call that must not run twice (create, publish, delete), retried safely.

        A timeout or 5xx does not say whether the server did the work: under load it often did,
        and a blind retry then fails with "already exists"/"already published"/404. So after any
        failure of an attempt that might have reached the server, `took_effect()` asks the server
        for the state the call was meant to produce (a truthy value, returned as the result) and
        the call is only sent again if that state is not there."""
        attempts = 1 + self.max_retries
        for attempt in range(1, attempts + 1):
            try:
                return self.request(method, path, retry=False, **kwargs)
            except ArgillaError as exc:
                transient = exc.status is None or exc.status in RETRY_STATUS
                # A refusal on the first attempt is a real refusal; on a retry it may be the
                # server telling us an earlier, lost attempt already did the work.
                if not transient and attempt == 1:
                    raise
                done = took_effect()
                if done:
                    log.warning("argilla: %s %s failed (%s) but had taken effect", method, path, exc)
                    return done
                if not transient or attempt == attempts:
                    raise
                self._sleep(attempt, str(exc.status or "network error"))
        raise AssertionError("unreachable")

    def _sleep(self, attempt: int, why: str) -> None:
        delay = self.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
        log.warning("argilla: %s, retrying in %.1fs (attempt %d of %d)", why, delay, attempt, self.max_retries)
        time.sleep(delay)

    # -- users and workspaces ----------------------------------------------------------------
    def me(self) -> dict:
        return self.request("GET", "/api/v1/me")

    def usernames(self) -> dict[str, str]:
        """user id -> username (needs an owner or admin key; otherwise ids stand in for names)."""
        try:
            return {u["id"]: u["username"] for u in self.request("GET", "/api/v1/users")["items"]}
        except ArgillaError:
            return {}

    def workspace_id(self, name: str, *, create: bool = True) -> str:
        for ws in self.request("GET", "/api/v1/me/workspaces")["items"]:
            if ws["name"] == name:
                return ws["id"]
        if not create:
            raise ArgillaError(f"Argilla workspace '{name}' not found at {self.api_url}")
        return self.request("POST", "/api/v1/workspaces", json={"name": name})["id"]

    # -- datasets ----------------------------------------------------------------------------
    def find_dataset(self, name: str, workspace_id: str) -> dict | None:
        for ds in self.request("GET", "/api/v1/me/datasets")["items"]:
            if ds["name"] == name and ds["workspace_id"] == workspace_id:
                return ds
        return None

    def create_dataset(self, name: str, workspace_id: str, settings: ReviewSettings, *,
                       min_submitted: int, metadata: dict[str, Any]) -> dict:
        """Create, configure and publish a dataset. A crash midway leaves a draft, which the next
        call to `ensure_dataset` deletes and recreates (a draft cannot hold records)."""
        ds = self.request_once("POST", "/api/v1/datasets", json={
            "name": name,
            "workspace_id": workspace_id,
            "guidelines": settings.guidelines,
            "allow_extra_metadata": False,
            "distribution": {"strategy": "overlap", "min_submitted": min_submitted},
            "metadata": metadata,
        }, took_effect=lambda: self.find_dataset(name, workspace_id))
        for kind, payloads in (("fields", settings.field_payloads()), ("questions", settings.question_payloads()),
                               ("metadata-properties", settings.metadata_payloads())):
            for payload in payloads:
                self.request_once("POST", f"/api/v1/datasets/{ds['id']}/{kind}", json=payload,
                                  took_effect=lambda kind=kind, name=payload["name"]: self._named(ds["id"], kind, name))
        return self.request_once("PUT", f"/api/v1/datasets/{ds['id']}/publish",
                                 took_effect=lambda: self._published(ds["id"]))

    def _named(self, dataset_id: str, kind: str, name: str) -> dict | None:
        """The dataset's field, question or metadata property called `name`, if it exists."""
        # Metadata properties are listed under /me (POST and GET live at different paths).
        prefix = "/api/v1/me/datasets" if kind == "metadata-properties" else "/api/v1/datasets"
        items = self.request("GET", f"{prefix}/{dataset_id}/{kind}")["items"]
        return next((item for item in items if item["name"] == name), None)

    def _published(self, dataset_id: str) -> dict | None:
        ds = self.request("GET", f"/api/v1/datasets/{dataset_id}")
        return ds if ds.get("status") == "ready" else None

    def _gone(self, dataset_id: str) -> bool:
        try:
            self.request("GET", f"/api/v1/datasets/{dataset_id}")
        except ArgillaError as exc:
            if exc.status == 404:
                return True
            raise
        return False

    def update_dataset(self, dataset_id: str, **changes: Any) -> dict:
        if "metadata" in changes:
            # Argilla 2.8 merges a patched dict column into the stored dict in place, which its ORM
            # does not notice, so the change is lost; clearing it first makes the write a new value.
            self.request("PATCH", f"/api/v1/datasets/{dataset_id}", json={"metadata": None})
        return self.request("PATCH", f"/api/v1/datasets/{dataset_id}", json=changes)

    def delete_dataset(self, dataset_id: str) -> None:
        # A retried DELETE that meets 404 means the lost first attempt deleted it: success.
        self.request_once("DELETE", f"/api/v1/datasets/{dataset_id}", took_effect=lambda: self._gone(dataset_id))

    def progress(self, dataset_id: str) -> dict:
        return self.request("GET", f"/api/v1/datasets/{dataset_id}/progress")

    def questions(self, dataset_id: str) -> list[dict]:
        return self.request("GET", f"/api/v1/datasets/{dataset_id}/questions")["items"]

    # -- records -----------------------------------------------------------------------------
    def upsert_records(self, dataset_id: str, items: list[dict]) -> int:
        """Create or update records matched by `external_id`; returns how many the server took."""
        if len(items) > MAX_BULK_RECORDS:
            raise ValueError(f"at most {MAX_BULK_RECORDS} records per bulk request, got {len(items)}")
        body = self.request("PUT", f"/api/v1/datasets/{dataset_id}/records/bulk", json={"items": items})
        return len(body["items"])

    def iter_reviewed_records(self, dataset_id: str, statuses: list[str], *, responses: bool = True,
                              record_status: str | None = None) -> Iterator[dict]:
        """Records that have at least one response in `statuses` (and, if given, whose own status
        is `record_status`), with all their responses (`responses=False`: the records alone)."""
        return self.search_records(dataset_id, response_statuses=statuses, record_status=record_status,
                                   responses=responses)

    def search_records(self, dataset_id: str, *, response_statuses: list[str] | None = None,
                       record_status: str | None = None, inserted_since: str | None = None,
                       ids: list[str] | None = None, responses: bool = True) -> Iterator[dict]:
        """Records matching every filter given, oldest first, with all their responses (or none).

        `ids` are sent TERMS_LIMIT per request. The search engine narrows the set; past its result
        window the plain listing (every record, from SQLite) takes over, filtered here by record
        status, id and insertion time (not by response status without responses), so nothing is missed.
        """
        filters = []
        if response_statuses:
            filters.append({"type": "terms", "scope": {"entity": "response", "property": "status"},
                            "values": response_statuses})
        if record_status:
            filters.append({"type": "terms", "scope": {"entity": "record", "property": "status"},
                            "values": [record_status]})
        if inserted_since:
            filters.append({"type": "range", "scope": {"entity": "record", "property": "inserted_at"},
                            "ge": inserted_since})
        if ids is not None:
            for start in range(0, len(ids), TERMS_LIMIT):
                chunk = [*filters, {"type": "terms", "scope": {"entity": "record", "property": "id"},
                                    "values": ids[start:start + TERMS_LIMIT]}]
                yield from self._search_pages(dataset_id, chunk, responses, record_status, inserted_since)
            return
        yield from self._search_pages(dataset_id, filters, responses, record_status, inserted_since)

    def _search_pages(self, dataset_id: str, filters: list[dict], responses: bool,
                      record_status: str | None, inserted_since: str | None) -> Iterator[dict]:
        body = {"filters": {"and": filters},
                "sort": [{"scope": {"entity": "record", "property": "inserted_at"}, "order": "asc"}]}
        params = {"limit": PAGE_SIZE} | ({"include": "responses"} if responses else {})
        first = self.request("POST", f"/api/v1/datasets/{dataset_id}/records/search",
                             params={**params, "offset": 0}, json=body)
        if first["total"] > SEARCH_WINDOW:
            ids = next((set(f["values"]) for f in filters if f["scope"].get("property") == "id"), None)
            yield from (r for r in self._iter_all_records(dataset_id, responses=responses)
                        if record_status in (None, r.get("status")) and (ids is None or str(r["id"]) in ids)
                        and (inserted_since is None or r["inserted_at"] >= inserted_since))
            return
        yield from (item["record"] for item in first["items"])
        for offset in range(PAGE_SIZE, first["total"], PAGE_SIZE):
            page = self.request("POST", f"/api/v1/datasets/{dataset_id}/records/search",
                                params={**params, "offset": offset}, json=body)
            yield from (item["record"] for item in page["items"])

    def response_counts(self, dataset_id: str) -> dict[str, dict[str, int]]:
        """username -> {"submitted": n, "discarded": n} over the whole dataset, from one cheap
        aggregate request: the fingerprint an incremental pull compares against."""
        counts = {}
        for user in self.request("GET", f"/api/v1/datasets/{dataset_id}/users/progress")["users"]:
            counts[user["username"]] = {
                status: sum((user.get(part) or {}).get(status, 0) for part in ("completed", "pending"))
                for status in ("submitted", "discarded")
            }
        return counts

    def _iter_all_records(self, dataset_id: str, *, responses: bool = True) -> Iterator[dict]:
        offset = 0
        include = {"include": "responses"} if responses else {}
        while True:
            page = self.request("GET", f"/api/v1/datasets/{dataset_id}/records",
                                params={**include, "offset": offset, "limit": PAGE_SIZE})
            yield from page["items"]
            if len(page["items"]) < PAGE_SIZE:
                return
            offset += PAGE_SIZE

    def count_records(self, dataset_id: str) -> int:
        return int(self.progress(dataset_id)["total"])
