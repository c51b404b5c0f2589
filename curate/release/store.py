"""The versioned release store: a Delta Lake table plus one manifest per release and movable tags.

Layout under the store root (a local folder or s3://bucket/prefix)::

    rows/                    Delta table; release N is Delta version N-1 (each release overwrites
                             the table, so a version's data files belong to that release alone)
    manifests/000001.json    per release: counts, checksums of its data files, content hash,
                             parent, config hash, models, flow runs, campaigns, mix-ins
    tags/<name>.json         a movable pointer (version + content hash) with its history

A release is immutable: its content hash is recorded in the Delta commit itself and in the
manifest, and `verify` recomputes both that and every data file's sha256. Old versions are read
through Delta time travel; the store never vacuums, because that would delete past releases.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import create_table_with_add_actions
from filelock import FileLock

from curate.errors import CurateError
from curate.records import SCHEMA_VERSION
from curate.release.manifest import data_file_problems, manifest_differences
from curate.release.parts import Tally, WrittenFiles, duplicated_ids, remove_parts, write_parts
from curate.release.stream import (
    HASH_SCHEME,
    ContentHasher,
    RowSource,
    conform_lazy,
    lazy_rows,
    rehash,
    release_batches,
)
from curate.release.storage import StoreLocation, delta_storage_options, is_remote
from curate.secrets import redact

TABLE = "rows"
MANIFESTS = "manifests"
TAGS = "tags"
COMMIT_KEY = "curate.release"
# Every release must stay readable (time travel) and verifiable (its commit body) forever, so the
# Delta log never expires: a retention of ~1000 years on the table (set when the store is created;
# delta-rs applies table properties only then), and our own writes never clean up expired logs.
TABLE_PROPERTIES = {
    "delta.logRetentionDuration": "interval 365000 days",
    "delta.enableExpiredLogCleanup": "false",
}
_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$")
_HASH_PREFIX = re.compile(r"^[0-9a-f]{6,64}$")
# A draft holds unreviewed rows, so it must never carry the tag consumers train from.
FORBIDDEN_DRAFT_TAGS = ("published",)
# Manifest key: the sha256 of the rows file a release was built from (`release create` passes the
# workspace's). The same file again means the same content hash, so it is not even read.
ROWS_FILE_KEY = "rows_file_sha256"


class ReleaseNotFound(CurateError):
    pass


class VerificationFailed(CurateError):
    pass


@dataclass
class CommitResult:
    manifest: dict[str, Any]
    created: bool

    @property
    def version(self) -> int:
        return self.manifest["version"]


@dataclass
class VerifyReport:
    version: int
    problems: list[str] = field(default_factory=list)
    files_checked: int = 0
    rows_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def _manifest_name(version: int) -> str:
    return f"{MANIFESTS}/{version:06d}.json"


def _same_config(latest: dict[str, Any], metadata: dict[str, Any]) -> bool:
    return latest.get("config_hash") == metadata.get("config_hash")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class ReleaseStore:
    def __init__(self, uri: str | Path):
        self.loc = StoreLocation.from_uri(uri)
        self.uri = self.loc.uri
        self.table_uri = self.loc.uri_of(TABLE)
        self.storage_options = delta_storage_options(self.uri)

    # -- reading ---------------------------------------------------------------------------
    def _delta(self, delta_version: int | None = None) -> DeltaTable:
        try:
            return DeltaTable(self.table_uri, version=delta_version, storage_options=self.storage_options)
        except TableNotFoundError as exc:
            raise ReleaseNotFound(f"{self.uri}: no releases yet (no Delta table at {self.table_uri})") from exc

    def _delta_head(self) -> int | None:
        try:
            return self._delta().version()
        except ReleaseNotFound:
            return None

    def versions(self) -> list[int]:
        """Release numbers that have a manifest, oldest first."""
        return sorted(int(n.split(".")[0]) for n in self.loc.list_names(MANIFESTS) if re.fullmatch(r"\d{6}\.json", n))

    def manifest(self, ref: str | int) -> dict[str, Any]:
        version = self.resolve(ref)
        return json.loads(self.loc.read_bytes(_manifest_name(version)))

    def manifests(self) -> list[dict[str, Any]]:
        return [json.loads(self.loc.read_bytes(_manifest_name(v))) for v in self.versions()]

    def resolve(self, ref: str | int) -> int:
        """A release number (3 or v3), 'latest', a tag name, or a content-hash prefix (6+ hex chars).

        'latest' is the newest release that is not a draft: drafts are reached only by number,
        tag or hash, so nothing that defaults to 'latest' (export, eval) picks unreviewed rows."""
        versions = self.versions()
        if not versions:
            raise ReleaseNotFound(f"{self.uri}: no releases yet")
        text = str(ref).strip()
        if re.fullmatch(r"v?\d+", text):
            number = int(text.lstrip("v"))
            if number not in versions:
                raise ReleaseNotFound(f"{self.uri}: no release {number} (releases: {versions[0]}..{versions[-1]})")
            return number
        if text == "latest":
            return self._latest_reviewed(versions)
        tags = self.tags()
        if text in tags:
            return tags[text]["version"]
        if _HASH_PREFIX.fullmatch(text):
            matches = [m["version"] for m in self.manifests() if m["content_hash"].startswith(text)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ReleaseNotFound(f"{self.uri}: content hash prefix '{text}' is ambiguous: releases {matches}")
        raise ReleaseNotFound(
            f"{self.uri}: unknown release '{text}' (use a number, 'latest', a tag {sorted(tags)} or a content-hash prefix)"
        )

    def _latest_reviewed(self, versions: list[int]) -> int:
        for version in reversed(versions):
            if not json.loads(self.loc.read_bytes(_manifest_name(version))).get("draft"):
                return version
        raise ReleaseNotFound(
            f"{self.uri}: no reviewed release yet, only drafts {versions} ('latest' never means a draft; "
            "name a draft by number or tag to use it)"
        )

    def is_draft(self, ref: str | int) -> bool:
        return bool(self.manifest(ref).get("draft"))

    def read(self, ref: str | int) -> pl.DataFrame:
        version = self.resolve(ref)
        return pl.read_delta(self.table_uri, version=version - 1, storage_options=self.storage_options).sort("row_id")

    def batches(self, ref: str | int, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """A release's rows in batches of at most BATCH_ROWS, in file order (not sorted): bounded memory."""
        yield from release_batches(self._delta(self.resolve(ref) - 1), columns)

    # -- writing ---------------------------------------------------------------------------
    def commit(
        self, rows: RowSource, metadata: dict[str, Any], *, tags: list[str] | tuple[str, ...] = ()
    ) -> CommitResult:
        """Store `rows` as a new release unless they and the config equal the latest release's.

        `rows` may be a Parquet file's path (what `release create` passes) or a lazy frame: it is read
        once, in batches, never whole (its row_ids are read again only if two of them share a hash).

        `metadata` goes into the manifest (config, config_hash, models, flow_run_ids, campaigns,
        mixes, inputs...). Returns the new (or unchanged latest) release's manifest.
        """
        for tag in tags:
            self._check_tag_name(tag)
        with self._writer_lock():
            return self._commit(rows if isinstance(rows, Path) else conform_lazy(rows), metadata, tags)

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """One writer at a time. Local stores lock a file; object stores have no cheap lock, so
        they rely on a single writer (or a Delta lock provider) and the commit-id check below."""
        if is_remote(self.uri):
            yield
            return
        Path(self.uri).mkdir(parents=True, exist_ok=True)
        with FileLock(str(Path(self.uri) / ".writer.lock")):
            yield

    def _commit(self, rows: RowSource, metadata: dict[str, Any], tags: list[str] | tuple[str, ...]) -> CommitResult:
        self._finish_orphans()
        parent, source = self._latest(), metadata.get(ROWS_FILE_KEY)
        if parent and source and parent.get(ROWS_FILE_KEY) == source and _same_config(parent, metadata):
            # Built from the same rows file as the latest release: its content hash is this one's,
            # so nothing is read or written.
            return self._unchanged(parent, tags)
        # One pass (curate.release.parts): rows are hashed, counted and written as they are read;
        # the files stay invisible until the Delta commit below adds them.
        hasher, tally = ContentHasher(), Tally()

        def account(batch: pl.DataFrame) -> None:
            hasher.update(batch)
            tally.update(batch)

        written = write_parts(self.loc, TABLE, rows, account)
        try:
            return self._commit_written(rows, written, hasher, tally, metadata, tags)
        except BaseException:
            # After the commit, a manifest left unwritten is completed later: the files must stay.
            if not written.committed and not self._head_holds(written):
                remove_parts(self.loc, TABLE, written.paths)
            raise

    def _latest(self) -> dict[str, Any] | None:
        versions = self.versions()
        return json.loads(self.loc.read_bytes(_manifest_name(versions[-1]))) if versions else None

    def _unchanged(self, latest: dict[str, Any], tags: list[str] | tuple[str, ...]) -> CommitResult:
        for tag in tags:
            self.tag(tag, latest["version"])
        return CommitResult(latest, created=False)

    def _head_holds(self, written: WrittenFiles) -> bool:
        """Whether the newest Delta version lists these files (a commit that raised after it took effect)."""
        head = self._delta_head()
        try:
            return head is not None and bool(written.paths) and written.paths[0] in {f["path"] for f in self._data_files(head)}
        except Exception:  # noqa: BLE001 - when in doubt, keep the files: unreferenced ones are harmless
            return True

    def _commit_written(
        self, rows: RowSource, written: WrittenFiles, hasher: ContentHasher, tally: Tally,
        metadata: dict[str, Any], tags: list[str] | tuple[str, ...],
    ) -> CommitResult:
        dupes = duplicated_ids(lazy_rows(rows), tally.colliding_hashes())
        if dupes:
            raise CurateError(f"release rows must have unique row_id; duplicated: {dupes[:5]}")
        hasher.columns = hasher.columns or sorted(written.schema.names)
        digest = hasher.hexdigest()
        self._finish_orphans()
        parent = self._latest()
        if parent and parent["content_hash"] == digest and _same_config(parent, metadata):
            remove_parts(self.loc, TABLE, written.paths)  # the same rows as the latest release: no new one
            return self._unchanged(parent, tags)

        head = self._delta_head()
        delta_version = 0 if head is None else head + 1
        version = delta_version + 1
        body = {
            **metadata,
            "version": version,
            "delta_version": delta_version,
            "commit_id": uuid.uuid4().hex,
            "content_hash": digest,
            "hash_scheme": HASH_SCHEME,
            "schema_version": SCHEMA_VERSION,
            "created_at": _now(),
            "parent": {"version": parent["version"], "content_hash": parent["content_hash"]} if parent else None,
            "rows": tally.rows,
            "by_language": tally.counts("language"),
            "by_topic": tally.counts("topic"),
            "by_source": tally.counts("source"),
            "by_split": tally.counts("split"),
            "by_language_topic": tally.nested_counts("language", "topic"),
        }
        body = json.loads(redact(json.dumps(body, default=str)))
        commit = CommitProperties(custom_metadata={COMMIT_KEY: json.dumps(body, sort_keys=True)})
        hooks = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)
        if head is None:
            create_table_with_add_actions(
                self.table_uri, DeltaSchema.from_arrow(written.schema), written.actions, mode="error",
                configuration=TABLE_PROPERTIES, storage_options=self.storage_options,
                commit_properties=commit, post_commithook_properties=hooks,
            )
        else:
            # Overwrite: the new version holds only this release's files (older ones stay for time travel).
            self._delta(head).create_write_transaction(
                written.actions, mode="overwrite", schema=written.schema,
                commit_properties=commit, post_commithook_properties=hooks,
            )
        written.committed = True
        committed = self._commit_body(delta_version)
        if committed is None or committed.get("commit_id") != body["commit_id"]:
            raise CurateError(
                f"{self.uri}: another writer committed Delta version {delta_version} at the same time; "
                "run the release again (object stores need a single writer or a Delta lock provider)"
            )
        manifest = self._finish(body, written.checksums)
        for tag in tags:
            self.tag(tag, version)
        return CommitResult(manifest, created=True)

    def _commit_body(self, delta_version: int) -> dict[str, Any] | None:
        for entry in self._delta().history():
            if entry.get("version") == delta_version:
                raw = entry.get(COMMIT_KEY)
                return json.loads(raw) if raw else None
        return None

    def _data_files(self, delta_version: int) -> list[dict[str, Any]]:
        actions = pl.DataFrame(self._delta(delta_version).get_add_actions(flatten=True))
        return [{"path": p, "size": int(s)} for p, s in actions.select("path", "size_bytes").sort("path").iter_rows()]

    def _finish(self, body: dict[str, Any], checksums: dict[str, str] | None = None) -> dict[str, Any]:
        """Write the manifest: the commit body plus the sha256 of every data file of that version
        (`checksums`: those already computed as the files were written)."""
        known = checksums or {}
        files = [
            f | {"sha256": known.get(f["path"]) or self.loc.sha256(f"{TABLE}/{f['path']}")}
            for f in self._data_files(body["delta_version"])
        ]
        manifest = body | {"files": files}
        self.loc.write_bytes(
            _manifest_name(body["version"]), (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
        )
        return manifest

    def _finish_orphans(self) -> None:
        """A crash between the Delta commit and the manifest write leaves a version without a
        manifest; its body is in the commit, so the manifest can be completed exactly."""
        head = self._delta_head()
        if head is None:
            return
        have = set(self.versions())
        for delta_version in range(head + 1):
            if delta_version + 1 in have:
                continue
            body = self._commit_body(delta_version)
            if body is None or body.get("delta_version") != delta_version:
                raise CurateError(
                    f"{self.table_uri}: Delta version {delta_version} was not committed by a curate release "
                    "(another writer touched the table); inspect it before releasing again"
                )
            self._finish(body)

    # -- tags ------------------------------------------------------------------------------
    def _check_tag_name(self, name: str) -> None:
        if (
            not _TAG_NAME.fullmatch(name)
            or re.fullmatch(r"v\d+", name)
            or name == "latest"
            or _HASH_PREFIX.fullmatch(name)
        ):
            raise CurateError(
                f"bad tag name '{name}': use a letter then letters, digits, '.', '_' or '-', "
                "and not 'latest', a version like v3 or something that looks like a content hash"
            )

    def tags(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in self.loc.list_names(TAGS):
            if name.endswith(".json"):
                tag = json.loads(self.loc.read_bytes(f"{TAGS}/{name}"))
                out[tag["name"]] = tag
        return out

    def tag(self, name: str, ref: str | int) -> dict[str, Any]:
        """Point `name` at a release (moving it if it exists). Tags never touch release content."""
        self._check_tag_name(name)
        version = self.resolve(ref)
        manifest = self.manifest(version)
        if manifest.get("draft") and name in FORBIDDEN_DRAFT_TAGS:
            raise CurateError(
                f"release {version} is a draft (it holds rows not yet accepted by review) and cannot be tagged '{name}'"
            )
        previous = self.tags().get(name)
        history = (previous or {}).get("history", [])
        entry = {"version": version, "content_hash": manifest["content_hash"], "at": _now()}
        tag = {
            "name": name,
            **{k: entry[k] for k in ("version", "content_hash")},
            "moved_at": entry["at"],
            "history": [*history, entry],
        }
        self.loc.write_bytes(f"{TAGS}/{name}.json", (json.dumps(tag, indent=2, sort_keys=True) + "\n").encode())
        return tag

    # -- verification ----------------------------------------------------------------------
    def verify(self, ref: str | int) -> VerifyReport:
        """Recompute the checksums of one release: every data file and the rows' content hash."""
        version = self.resolve(ref)
        report = VerifyReport(version)
        manifest = self.manifest(version)
        problems = report.problems
        body = self._commit_body(manifest["delta_version"])
        if body is None:
            problems.append(f"release {version}: the Delta commit has no curate record")
        else:
            problems += manifest_differences(version, manifest, body)
        recorded = {f["path"]: f for f in manifest["files"]}
        try:
            current = {f["path"]: f for f in self._data_files(manifest["delta_version"])}
        except Exception as exc:  # noqa: BLE001 - a broken log is a verification finding, not a crash
            problems.append(f"release {version}: cannot read the Delta log: {exc}")
            current = recorded
        # The data files' sha256 (I/O and hashlib, which releases the GIL) run in a thread while
        # this one re-hashes the rows: the two halves of verify overlap on two cores.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-files") as pool:
            files = pool.submit(data_file_problems, self.loc, TABLE, version, recorded, current)
            row_problems = self._row_problems(version, manifest, report)
            file_problems, report.files_checked = files.result()
        problems += file_problems + row_problems
        for name, tag in self.tags().items():
            if tag["version"] == version and tag["content_hash"] != manifest["content_hash"]:
                problems.append(
                    f"tag {name}: points at release {version} with content hash {tag['content_hash'][:12]}, manifest has {manifest['content_hash'][:12]}"
                )
        return report

    def _row_problems(self, version: int, manifest: dict[str, Any], report: VerifyReport) -> list[str]:
        problems = []
        try:
            report.rows_checked, actual_hash = self._rehash(version, manifest)
            if report.rows_checked != manifest["rows"]:
                problems.append(f"release {version}: {report.rows_checked} rows != recorded {manifest['rows']}")
            if actual_hash != manifest["content_hash"]:
                problems.append(
                    f"release {version}: content hash {actual_hash[:12]} != recorded {manifest['content_hash'][:12]}"
                )
        except Exception as exc:  # noqa: BLE001 - unreadable data is exactly what verify reports
            problems.append(f"release {version}: rows cannot be read: {type(exc).__name__}: {exc}")
        return problems

    def _rehash(self, version: int, manifest: dict[str, Any]) -> tuple[int, str]:
        """Row count and content hash under the scheme the release was written with (v1 if unnamed)."""
        return rehash(self._delta(manifest["delta_version"]), manifest.get("hash_scheme"), lambda: self.read(version))

    def verify_all(self) -> list[VerifyReport]:
        versions = self.versions()
        if not versions:
            raise ReleaseNotFound(f"{self.uri}: no releases yet")
        return [self.verify(v) for v in versions]

