"""Push candidate answers to an Argilla dataset, sending only new or changed records.

Records are keyed by `candidate_id@answer_version` (Argilla's `external_id`, curate.review.identity), so the server upserts and a
repeated batch never duplicates. A local ledger remembers the content hash of every record the
server acknowledged, per dataset: an unchanged re-sync sends nothing, and an interrupted push
resumes with the batches that were never acknowledged.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import polars as pl

from curate.errors import CurateError
from curate.progress import Advance, noop
from curate.review.client import ArgillaClient
from curate.review.routing import RoutingConfig, current_routing
from curate.review.identity import SEPARATOR, json_string, record_key, sha256_hex, split_record_key, with_answer_version
from curate.review.settings import ReviewSettings
from curate.review.suggestions import attach_suggestions, with_judgments, with_source_question
from curate.tables import CANDIDATES, JUDGMENTS, KEYWORDS, QUESTIONS, ROUTING, TableRef
from curate.workspace import Workspace

LEDGER_FILE = Path("review") / "push_ledger.sqlite"
# Record metadata left out of the content hash: it labels where a record first came from, and a
# new upstream run with the same answer must not re-send it.
UNHASHED_METADATA = {"run"}
# Candidates turned into record payloads at a time: payloads are built, compared with the ledger and
# sent slice by slice, so a push holds one slice's records, never a list of every record.
PAYLOAD_ROWS = 2_000
# Records whose hashed JSON is built at once: it is a few copies of their texts, so a small slice
# keeps the push's peak memory where the per-row code had it.
HASH_ROWS = 500
_SQL_VARIABLES = 500  # ids per `in (...)` query, well under SQLite's limit
_EMPTY_HASHED = json.dumps({"fields": {}, "metadata": {}})


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
    routed: dict[str, Any] | None = None  # route counts when the judge stage ran (see curate.review.routing)
    superseded: int = 0  # candidates whose answer changed: a new record; the old one's verdicts no longer count

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PushLedger:
    """Content hash of every record the server acknowledged, per Argilla dataset id.

    One connection for the ledger's life (`close()` it, or use it as a context manager), in WAL mode
    with synchronous=NORMAL: a batch's acknowledgement is a commit without an fsync (a push of 150k
    records makes 600 of them; under a busy disk each fsync took seconds). A process that dies keeps
    every committed batch; a power loss may forget the last ones, which the next push re-sends (an
    upsert by key: no duplicate)."""

    def __init__(self, path: Path):
        self.path = path
        self._con: sqlite3.Connection | None = None
        path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connection()
        con.execute("pragma journal_mode = wal")  # kept by the file: set once, outside a transaction
        with con:
            con.execute(
                "create table if not exists pushed (dataset_id text not null, record_id text not null, "
                "content_hash text not null, pushed_at real not null, primary key (dataset_id, record_id))"
            )

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("pragma synchronous = normal")
        return con

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            self._con = self._connect()
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def __enter__(self) -> PushLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def for_workspace(cls, ws: Workspace) -> PushLedger:
        return cls(ws.root / LEDGER_FILE)

    def lookup(self, dataset_id: str, record_ids: list[str]) -> dict[str, str]:
        """record id -> acknowledged content hash, for those of `record_ids` the ledger holds."""
        found: dict[str, str] = {}
        con = self._connection()
        for start in range(0, len(record_ids), _SQL_VARIABLES):
            part = record_ids[start : start + _SQL_VARIABLES]
            found.update(con.execute(
                f"select record_id, content_hash from pushed where dataset_id = ? and record_id in ({','.join('?' * len(part))})",
                (dataset_id, *part),
            ).fetchall())
        return found

    def candidates_with_records(self, dataset_id: str, candidate_ids: list[str]) -> set[str]:
        """Those of `candidate_ids` with any acknowledged record: the bare key or `<id>@<any version>`.

        One query for all of them: each id's keys sort from the id itself up to `<id>A` ('A' follows
        '@'), so the primary key serves one range per id. The ids go in as one JSON parameter (no
        limit on their number) and are read first (CROSS JOIN keeps that order); a key in the range
        that is another candidate's (`<id>-2`) is dropped here."""
        if not candidate_ids:
            return set()
        rows = self._connection().execute(
            "select wanted.value, pushed.record_id from json_each(?) as wanted cross join pushed "
            "where pushed.dataset_id = ? and pushed.record_id >= wanted.value and pushed.record_id < wanted.value || ?",
            (json.dumps(candidate_ids), dataset_id, chr(ord(SEPARATOR) + 1)),
        ).fetchall()
        return {candidate for candidate, key in rows if split_record_key(key)[0] == candidate}

    def acknowledge(self, dataset_id: str, rows: list[tuple[str, str]]) -> None:
        now = time.time()
        con = self._connection()
        with con:
            con.executemany(
                "insert into pushed values (?, ?, ?, ?) on conflict(dataset_id, record_id) "
                "do update set content_hash = excluded.content_hash, pushed_at = excluded.pushed_at",
                [(dataset_id, rid, h, now) for rid, h in rows],
            )

    def count(self, dataset_id: str) -> int:
        return self._connection().execute("select count(*) from pushed where dataset_id = ?", (dataset_id,)).fetchone()[0]


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


def check_record_columns(df: pl.DataFrame, settings: ReviewSettings) -> None:
    missing_required = [f.source for f in settings.fields if f.required and f.source not in df.columns]
    if missing_required:
        raise CurateError(f"candidate table lacks the column(s) {missing_required} that required review fields need")


def payload_stream(
    frame: pl.DataFrame, settings: ReviewSettings, question_ids: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """`record_payloads` of `frame`, built PAYLOAD_ROWS candidates at a time as they are consumed
    (with the judge's suggestions when `question_ids` is given)."""
    for part in frame.iter_slices(PAYLOAD_ROWS):
        payloads = record_payloads(part, settings)
        if question_ids is not None:
            attach_suggestions(payloads, part, question_ids)
        yield from payloads


def _record_texts(df: pl.DataFrame, sources: list[str]) -> pl.DataFrame:
    """The `sources` columns as the text a record carries: `str()` of each value, null where null."""
    texts = []
    for source in sources:
        column = df[source]
        if column.dtype == pl.String or column.dtype.is_integer():  # polars writes these as str() does
            texts.append(column.cast(pl.String))
        else:  # floats, booleans, nested values: Python's own str()
            texts.append(pl.Series(source, [None if v is None else str(v) for v in column.to_list()], dtype=pl.String))
    return pl.DataFrame(texts) if texts else pl.DataFrame(schema={})


def _json_object(entries: list[tuple[str, str]], texts: pl.DataFrame) -> pl.Expr:
    """`json.dumps({name: text})` with sorted keys over (name, source) pairs, leaving out the null and
    empty texts, as one polars string per row."""
    present = [(name, source) for name, source in sorted(entries) if source in texts.columns]
    if not present:
        return pl.lit("{}")
    members = [pl.when(pl.col(source).is_not_null() & (pl.col(source) != ""))
               .then(pl.concat_str(pl.lit(json.dumps(name, ensure_ascii=False) + ": "), json_string(pl.col(source))))
               for name, source in present]
    return pl.concat_str(pl.lit("{"), pl.concat_str(members, separator=", ", ignore_nulls=True), pl.lit("}"))


def record_payloads(df: pl.DataFrame, settings: ReviewSettings) -> list[dict[str, Any]]:
    """Argilla record bodies (`external_id`, fields, metadata) with each one's content hash.

    The hash is sha256 of `json.dumps({"fields": ..., "metadata": ...}, sort_keys=True,
    ensure_ascii=False)` (metadata without UNHASHED_METADATA); that JSON is built by polars,
    HASH_ROWS records at a time, so per record only the dicts and the digest are Python work."""
    check_record_columns(df, settings)
    df = with_answer_version(df)
    sources = sorted({s.source for s in [*settings.fields, *settings.metadata]} & set(df.columns))
    texts = _record_texts(df, sources)
    fields = [(f.name, f.source) for f in settings.fields]
    metadata = [(m.name, m.source) for m in settings.metadata]
    hashed = pl.concat_str(
        pl.lit('{"fields": '), _json_object(fields, texts),
        pl.lit(', "metadata": '), _json_object([m for m in metadata if m[0] not in UNHASHED_METADATA], texts), pl.lit("}"),
    )
    if texts.width:
        digests = [digest for part in texts.iter_slices(HASH_ROWS) for digest in sha256_hex(part.select(hashed).to_series())]
    else:
        digests = sha256_hex(pl.Series([_EMPTY_HASHED] * df.height, dtype=pl.String))
    values = {source: texts[source].to_list() for source in texts.columns}
    field_values = [(name, values[source]) for name, source in fields if source in values]
    metadata_values = [(name, values[source]) for name, source in metadata if source in values]
    payloads = []
    for i, (candidate_id, version) in enumerate(zip(df["candidate_id"].to_list(), df["answer_version"].to_list(), strict=True)):
        # Keyed by the text reviewers judge, so a changed answer is a new record (curate.review.identity).
        payloads.append({
            "external_id": record_key(candidate_id, version),
            "fields": {name: v[i] for name, v in field_values if v[i] not in (None, "")},
            "metadata": {name: v[i] for name, v in metadata_values if v[i] not in (None, "")},
            "_hash": digests[i],
        })
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
    payloads: Iterable[dict[str, Any]],
    ledger: PushLedger,
    *,
    batch_size: int = 250,
    progress: Advance = noop,
) -> dict[str, int]:
    """Send records whose hash differs from the ledger; the ledger advances per acknowledged batch.

    `payloads` may be a stream: it is compared with the ledger `batch_size` records at a time (by
    key, in SQLite), so memory holds about two batches whatever the campaign's size."""
    counts = {"new": 0, "changed": 0, "unchanged": 0, "pushed": 0, "batches": 0, "superseded": 0}
    outgoing: list[dict[str, Any]] = []

    def send(batch: list[dict[str, Any]]) -> None:
        client.upsert_records(dataset_id, [{k: v for k, v in p.items() if k != "_hash"} for p in batch])
        ledger.acknowledge(dataset_id, [(p["external_id"], p["_hash"]) for p in batch])
        counts["batches"] += 1
        counts["pushed"] += len(batch)
        progress(len(batch))

    items = iter(payloads)
    while chunk := list(islice(items, batch_size)):
        bares = [split_record_key(p["external_id"])[0] for p in chunk]
        known = ledger.lookup(dataset_id, sorted({p["external_id"] for p in chunk} | set(bares)))
        for p, bare in zip(chunk, bares, strict=True):
            # A record pushed before keys carried the answer version keeps its bare candidate key while
            # its text is unchanged, so upgrading does not duplicate a campaign's records.
            if p["external_id"] not in known and known.get(bare) == p["_hash"]:
                p["external_id"] = bare
        todo = [p for p in chunk if known.get(p["external_id"]) != p["_hash"]]
        new = [split_record_key(p["external_id"])[0] for p in todo if p["external_id"] not in known]
        counts["new"] += len(new)
        counts["changed"] += len(todo) - len(new)
        counts["unchanged"] += len(chunk) - len(todo)
        counts["superseded"] += len(ledger.candidates_with_records(dataset_id, sorted(set(new))))
        outgoing += todo
        while len(outgoing) >= batch_size:
            send(outgoing[:batch_size])
            outgoing = outgoing[batch_size:]
    if outgoing:
        send(outgoing)
    return counts


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
    routing: RoutingConfig | None = None,
) -> PushReport:
    started = time.perf_counter()
    ref = TableRef.parse(source)
    path = ws.table_path(ref.stage, ref.table)
    if not path.exists():
        raise CurateError(f"table '{source}' does not exist in {ws.root}; run stage '{ref.stage}' first")
    link = source_link(ws, source)
    candidates = pl.scan_parquet(path)
    source_columns = candidates.collect_schema().names()
    routed = judgments = routes = None
    # Route first (over the judgments, no answer text), then read only the candidates routed to
    # people: the texts of auto-decided and not-chosen rows (most of a campaign) are never loaded.
    result = current_routing(ws, routing) if routing is not None else None
    if result is not None:
        routed = result.manifest["report"]["by_route"]
        routes = ws.read(str(ROUTING)).filter(pl.col("route") == "human")
        human = routes["candidate_id"].unique().implode()
        candidates = candidates.filter(pl.col("candidate_id").is_in(human))
        judged = pl.scan_parquet(ws.table_path(JUDGMENTS.stage, JUDGMENTS.table))
        judgments = judged.filter(pl.col("candidate_id").is_in(human)).collect()
    frame = review_frame(
        candidates.collect(), _optional_table(ws, QUESTIONS), _optional_table(ws, KEYWORDS),
        run=run or link["curate_source_run_id"] or link["curate_source_fingerprint"],
    )
    frame = with_source_question(frame, _optional_table(ws, QUESTIONS))
    if routes is not None and judgments is not None:
        # Judged candidates: only those routed to people are sent, with the judge's suggestions.
        frame = with_judgments(frame, judgments, routes)
    check_record_columns(frame, settings)
    ds = ensure_dataset(client, campaign, workspace, settings, min_submitted=min_submitted, link=link)
    # A source that carries its own judgments (safety_filter/review: `judge_notes` and the
    # verdict columns) gets suggestions like a routed one.
    question_ids = None
    if routed is not None or "judge_notes" in source_columns:
        question_ids = {q["name"]: q["id"] for q in client.questions(ds["id"])}
    with PushLedger.for_workspace(ws) as ledger:
        counts = push_records(client, ds["id"], payload_stream(frame, settings, question_ids), ledger,
                              batch_size=batch_size, progress=progress)
    total = counts["new"] + counts["changed"] + counts["unchanged"]
    return PushReport(campaign=campaign, dataset_id=ds["id"], candidates=total,
                      seconds=round(time.perf_counter() - started, 3), routed=routed, **counts)
