"""Releases: reviewed candidates become immutable, versioned datasets with lineage.

Public API (other modules and flows code against this):

    from curate.release import create_release, ReleaseStore, diff_releases, export_hf, checkout

    result = create_release(cfg, tags=["candidate"], flow_run_ids=[...])   # -> CommitResult
    store = ReleaseStore("s3://bucket/releases" or "/path/releases")
    store.versions(); store.manifest("latest"); store.read(3); store.tag("published", 3)
    store.verify(3).problems                                               # [] when intact
    diff_releases(store.read(1), store.read(2), 1, 2)                      # added/removed/changed
    export_hf(store, "published", Path("out/hf"), fmt="messages")          # load_dataset-ready folder
    checkout(store, 2, Path("out/v2"), fmt="reasoning", file_format="jsonl")

Pure building blocks: build_release_rows(reviews, candidates, config, questions=, keywords=),
mix_sources(rows, config.mix), format_rows(rows, fmt).
"""

from curate.release.config import CardConfig, MixSource, ReleaseConfig
from curate.release.create import create_release, release_config, release_stage, store_uri
from curate.release.diff import ReleaseDiff, diff_releases
from curate.release.export import checkout, export_hf, push_to_hub
from curate.release.formats import format_rows
from curate.release.mix import mix_sources
from curate.release.rows import build_release_rows, content_hash_v1
from curate.release.store import CommitResult, ReleaseNotFound, ReleaseStore, VerifyReport
from curate.release.stream import HASH_SCHEME, HASH_SCHEME_V1
from curate.release.stream import content_hash_v2 as content_hash

__all__ = [
    "HASH_SCHEME",
    "HASH_SCHEME_V1",
    "CardConfig",
    "CommitResult",
    "MixSource",
    "ReleaseConfig",
    "ReleaseDiff",
    "ReleaseNotFound",
    "ReleaseStore",
    "VerifyReport",
    "build_release_rows",
    "checkout",
    "content_hash",
    "content_hash_v1",
    "create_release",
    "diff_releases",
    "export_hf",
    "format_rows",
    "mix_sources",
    "push_to_hub",
    "release_config",
    "release_stage",
    "store_uri",
]
