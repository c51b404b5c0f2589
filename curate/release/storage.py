"""Where a release store lives: a local folder or an object-store URI (s3://bucket/prefix).

The Delta table goes through deltalake, everything else (manifests, tags, checksums) through a
pyarrow filesystem resolved from the same URI, so moving a store to S3-compatible storage is a
change of URI and environment, not of code.

Credentials and endpoints come only from the standard environment variables that both
libraries read (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION,
AWS_ENDPOINT_URL, AWS_ALLOW_HTTP, AWS_S3_ALLOW_UNSAFE_RENAME). They are never written to a
manifest: manifests record the store URI only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs

from curate.workspace import atomic_write_bytes

_REMOTE_SCHEMES = ("s3", "s3a", "gs", "az", "abfs", "abfss")


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in _REMOTE_SCHEMES


def normalize_root(uri: str | Path) -> str:
    """Absolute local path, or the URI as given (without a trailing slash)."""
    text = str(uri)
    if is_remote(text):
        return text.rstrip("/")
    if text.startswith("file://"):
        text = text[len("file://") :]
    return str(Path(text).expanduser().resolve())


def delta_storage_options(uri: str) -> dict[str, str] | None:
    """Options for deltalake. Local stores need none; for S3 deltalake reads AWS_* itself, and a
    single writer without a lock service has to opt in to unsafe renames explicitly."""
    if not is_remote(uri):
        return None
    options = {}
    for key in ("AWS_S3_ALLOW_UNSAFE_RENAME", "AWS_ALLOW_HTTP", "AWS_ENDPOINT_URL", "AWS_REGION"):
        if os.environ.get(key):
            options[key] = os.environ[key]
    return options or None


def _s3_filesystem() -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or endpoint
        kwargs["scheme"] = parsed.scheme or "https"
    if os.environ.get("AWS_REGION"):
        kwargs["region"] = os.environ["AWS_REGION"]
    return pafs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class StoreLocation:
    """A filesystem plus the root path on it; all paths below are relative to the store root."""

    uri: str
    fs: pafs.FileSystem
    base: str

    @classmethod
    def from_uri(cls, uri: str | Path) -> StoreLocation:
        root = normalize_root(uri)
        parsed = urlparse(root)
        if parsed.scheme in ("s3", "s3a"):
            return cls(root, _s3_filesystem(), f"{parsed.netloc}{parsed.path}".rstrip("/"))
        if is_remote(root):
            fs, base = pafs.FileSystem.from_uri(root)
            return cls(root, fs, base.rstrip("/"))
        return cls(root, pafs.LocalFileSystem(), root)

    def path(self, *parts: str) -> str:
        return "/".join([self.base, *parts])

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one object. On object stores a single PUT is atomic; locally write-then-rename."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if isinstance(self.fs, pafs.LocalFileSystem):
            atomic_write_bytes(Path(target), data)
            return
        with self.fs.open_output_stream(target) as f:
            f.write(data)

    def list_names(self, rel: str) -> list[str]:
        selector = pafs.FileSelector(self.path(rel), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File)

    def sha256(self, rel: str, chunk: int = 1 << 20) -> str:
        h = hashlib.sha256()
        with self.fs.open_input_stream(self.path(rel)) as f:
            while block := f.read(chunk):
                h.update(block)
        return h.hexdigest()

    def size(self, rel: str) -> int | None:
        info = self.fs.get_file_info(self.path(rel))
        return None if info.type == pafs.FileType.NotFound else info.size
