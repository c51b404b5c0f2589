"""Push candidate answers to an Argilla dataset, sending only new or changed records.

Records are keyed by `candidate_id` (Argilla's `external_id`), so the server upserts and a
repeated batch never duplicates. A local ledger remembers the content hash of every record the
server acknowledged, per dataset: an unchanged re-sync sends nothing, and an interrupted push
resumes with the batches that were never acknowledged.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import CurateError
from curate.progress import Advance, noop
from curate.review.client import ArgillaClient
from curate.review.settings import ReviewSettings
from curate.tables import CANDIDATES, KEYWORDS, QUESTIONS, TableRef
from curate.workspace import Workspace

LEDGER_FILE = Path("review") / "push_ledger.sqlite"
# Record metadata left out of the content hash: it labels where a record first came from, and a
# new upstream run with the same answer must not re-send it.
UNHASHED_METADATA = {"run"}


@dataclass
class PushReport:
    campaign: str
    dataset_id: str
    candidates: int
    new: int
    changed: int
    unchanged: int
    pushed: int
    batches: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PushLedger:
    """Content hash of every record the server acknowledged, per Argilla dataset id."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.execute(
                "create table if not exists pushed (dataset_id text not null, record_id text not null, "
                "content_hash text not null, pushed_at real not null, primary key (dataset_id, record_id))"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    @classmethod
    def for_workspace(cls, ws: Workspace) -> PushLedger:
        return cls(ws.root / LEDGER_FILE)

    def hashes(self, dataset_id: str) -> pl.DataFrame:
        with closing(self._connect()) as con:
            rows = con.execute("select record_id, content_hash from pushed where dataset_id = ?", (dataset_id,)).fetchall()
        return pl.DataFrame(rows, schema={"record_id": pl.String, "ledger_hash": pl.String}, orient="row")

    def acknowledge(self, dataset_id: str, rows: list[tuple[str, str]]) -> None:
        now = time.time()
        with closing(self._connect()) as con, con:
            con.executemany(
                "insert into pushed values (?, ?, ?, ?) on conflict(dataset_id, record_id) "
                "do update set content_hash = excluded.content_hash, pushed_at = excluded.pushed_at",
                [(dataset_id, rid, h, now) for rid, h in rows],
            )

    def count(self, dataset_id: str) -> int:
        with closing(self._connect()) as con:
            return con.execute("select count(*) from pushed where dataset_id = ?", (dataset_id,)).fetchone()[0]


# -- building records ------------------------------------------------------------------------

def _context_column(df: pl.DataFrame) -> pl.Expr:
    parts = []
    if "topic" in df.columns:
        parts.append(pl.when(pl.col("topic").is_not_null()).then(pl.lit("**Topic:** ") + pl.col("topic")))
    if "keyword" in df.columns:
        parts.append(pl.when(pl.col("keyword").is_not_null()).then(pl.lit("**Keyword:** ") + pl.col("keyword")))
    if not parts:
        return pl.lit(None, dtype=pl.String).alias("context")
    return pl.concat_str(parts, separator="  \n", ignore_nulls=True).replace("", None).alias("context")


def review_frame(
    candidates: pl.DataFrame,
    questions: pl.DataFrame | None = None,
    keywords: pl.DataFrame | None = None,
    *,
    run: str | None = None,
) -> pl.DataFrame:
    """Candidates with status ok and an answer, joined with their question's keyword and topic.

    Upstream tables are optional: columns the candidate row already has win, missing context
    stays empty.
    """
    if "candidate_id" not in candidates.columns:
        raise CurateError("candidate table lacks the 'candidate_id' column")
    df = candidates
    if "status" in df.columns:
        df = df.filter(pl.col("status") == "ok")
    if "answer" in df.columns:
        df = df.filter(pl.col("answer").is_not_null())
    df = df.unique("candidate_id", keep="last", maintain_order=True)
    for table, key, wanted in ((questions, "question_id", ("keyword_id", "keyword", "topic")),
                               (keywords, "keyword_id", ("keyword", "topic"))):
        if table is None or key not in table.columns or key not in df.columns:
            continue
        extra = [c for c in wanted if c in table.columns]
        if not extra:
            continue
        side = table.select(key, *[pl.col(c).alias(f"{c}__ctx") for c in extra]).unique(key, keep="first")
        df = df.join(side, on=key, how="left")
        df = df.with_columns(
            [(pl.coalesce(c, f"{c}__ctx") if c in df.columns else pl.col(f"{c}__ctx")).alias(c) for c in extra]
        ).drop([f"{c}__ctx" for c in extra])
    if "run" not in df.columns:
        df = df.with_columns(run=pl.lit(run, dtype=pl.String))
    return df.with_columns(_context_column(df))


def record_payloads(df: pl.DataFrame, settings: ReviewSettings) -> list[dict[str, Any]]:
    """Argilla record bodies (`external_id`, fields, metadata) with each one's content hash."""
    sources = {s.source for s in [*settings.fields, *settings.metadata]}
    missing_required = [f.source for f in settings.fields if f.required and f.source not in df.columns]
    if missing_required:
        raise CurateError(f"candidate table lacks the column(s) {missing_required} that required review fields need")
    columns = ["candidate_id", *sorted(c for c in sources if c in df.columns)]
    payloads = []
    for row in df.select(columns).iter_rows(named=True):
        fields = {f.name: str(row[f.source]) for f in settings.fields if row.get(f.source) not in (None, "")}
        metadata = {m.name: str(row[m.source]) for m in settings.metadata if row.get(m.source) not in (None, "")}
        hashed = {"fields": fields, "metadata": {k: v for k, v in metadata.items() if k not in UNHASHED_METADATA}}
        digest = hashlib.sha256(json.dumps(hashed, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        payloads.append({"external_id": row["candidate_id"], "fields": fields, "metadata": metadata, "_hash": digest})
    return payloads


# -- the dataset -----------------------------------------------------------------------------

def ensure_dataset(
    client: ArgillaClient,
    campaign: str,
    workspace: str,
    settings: ReviewSettings,
    *,
    min_submitted: int,
    link: dict[str, Any],
) -> dict:
    """Find or create the campaign's dataset; keep its guidelines, distribution and run link current."""
    workspace_id = client.workspace_id(workspace)
    metadata = {**link, "curate_campaign": campaign, "curate_settings_hash": settings.structure_hash()}
    ds = client.find_dataset(campaign, workspace_id)
    if ds is not None and ds["status"] == "draft":
        client.delete_dataset(ds["id"])  # a creation that died midway; drafts hold no records
        ds = None
    if ds is None:
        return client.create_dataset(campaign, workspace_id, settings, min_submitted=min_submitted, metadata=metadata)
    existing = ds.get("metadata") or {}
    if existing.get("curate_settings_hash") not in (None, metadata["curate_settings_hash"]):
        raise CurateError(
            f"Argilla dataset '{campaign}' was created with other fields/questions/metadata than the current "
            "settings file; start a new campaign (another name) to use the new settings"
        )
    changes: dict[str, Any] = {}
    if ds.get("guidelines") != settings.guidelines:
        changes["guidelines"] = settings.guidelines
    if ds["distribution"].get("min_submitted") != min_submitted:
        changes["distribution"] = {"strategy": "overlap", "min_submitted": min_submitted}
    if any(existing.get(k) != v for k, v in metadata.items()):
        changes["metadata"] = {**existing, **metadata}
    return client.update_dataset(ds["id"], **changes) if changes else ds


def push_records(
    client: ArgillaClient,
    dataset_id: str,
    payloads: list[dict[str, Any]],
    ledger: PushLedger,
    *,
    batch_size: int = 250,
    progress: Advance = noop,
) -> dict[str, int]:
    """Send records whose hash differs from the ledger; the ledger advances per acknowledged batch."""
    known = dict(ledger.hashes(dataset_id).iter_rows())
    todo = [p for p in payloads if known.get(p["external_id"]) != p["_hash"]]
    new = sum(1 for p in todo if p["external_id"] not in known)
    batches = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        client.upsert_records(dataset_id, [{k: v for k, v in p.items() if k != "_hash"} for p in batch])
        ledger.acknowledge(dataset_id, [(p["external_id"], p["_hash"]) for p in batch])
        batches += 1
        progress(len(batch))
    return {"new": new, "changed": len(todo) - new, "unchanged": len(payloads) - len(todo),
            "pushed": len(todo), "batches": batches}


# -- the workspace edge ------------------------------------------------------------------------

def _optional_table(ws: Workspace, ref: str | TableRef) -> pl.DataFrame | None:
    ref = TableRef.parse(ref)
    return pl.read_parquet(ws.table_path(ref.stage, ref.table)) if ws.table_path(ref.stage, ref.table).exists() else None


def source_link(ws: Workspace, source: str) -> dict[str, Any]:
    """What ties the dataset back to the run: workspace, source table, its hash and run id."""
    stage, table = source.split("/", 1)
    manifest = ws.manifest(stage) or {}
    out = manifest.get("outputs", {}).get(table, {})
    return {
        "curate_workspace": str(ws.root.resolve()),
        "curate_source": source,
        "curate_source_sha256": out.get("sha256"),
        "curate_source_run_id": manifest.get("run_id"),
        "curate_source_fingerprint": manifest.get("fingerprint"),
    }


def push_workspace(
    ws: Workspace,
    client: ArgillaClient,
    settings: ReviewSettings,
    *,
    campaign: str,
    workspace: str,
    min_submitted: int,
    source: str = str(CANDIDATES),
    run: str | None = None,
    batch_size: int = 250,
    progress: Advance = noop,
) -> PushReport:
    started = time.perf_counter()
    candidates = _optional_table(ws, source)
    if candidates is None:
        raise CurateError(f"table '{source}' does not exist in {ws.root}; run the answers stage first")
    link = source_link(ws, source)
    frame = review_frame(
        candidates, _optional_table(ws, QUESTIONS), _optional_table(ws, KEYWORDS),
        run=run or link["curate_source_run_id"] or link["curate_source_fingerprint"],
    )
    payloads = record_payloads(frame, settings)
    ds = ensure_dataset(client, campaign, workspace, settings, min_submitted=min_submitted, link=link)
    counts = push_records(client, ds["id"], payloads, PushLedger.for_workspace(ws),
                          batch_size=batch_size, progress=progress)
    return PushReport(campaign=campaign, dataset_id=ds["id"], candidates=len(payloads),
                      seconds=round(time.perf_counter() - started, 3), **counts)
