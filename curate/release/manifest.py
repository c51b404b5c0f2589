"""What `verify` compares between a release's manifest and the body recorded in its Delta commit.

The manifest is the commit body plus the checksums of the data files, which the commit cannot hold
(they exist only after it); every other key must be equal, so no field of a manifest (config
hash, parent, models, campaigns, counts, notes, timestamps) can be edited unnoticed.
"""

from __future__ import annotations

import json
from typing import Any

from curate.release.storage import StoreLocation

# Manifest keys the Delta commit cannot hold, because they are computed after it.
MANIFEST_ONLY_KEYS = ("files",)


def manifest_differences(version: int, manifest: dict[str, Any], body: dict[str, Any]) -> list[str]:
    """Every manifest key whose value differs from the body recorded in the Delta commit (the
    manifest is the commit body plus the data files' checksums, which `verify` checks separately)."""
    problems = []
    recorded = {k: v for k, v in manifest.items() if k not in MANIFEST_ONLY_KEYS}
    for key in sorted(set(recorded) | set(body)):
        if key not in body:
            problems.append(f"release {version}: manifest field '{key}' is not in the Delta commit")
        elif key not in recorded:
            problems.append(f"release {version}: manifest lacks field '{key}' that the Delta commit holds")
        elif recorded[key] != body[key]:
            shown = lambda v: json.dumps(v, sort_keys=True, default=str)[:80]  # noqa: E731
            problems.append(
                f"release {version}: manifest field '{key}' is {shown(recorded[key])}, the Delta commit has {shown(body[key])}"
            )
    return problems


def data_file_problems(
    loc: StoreLocation, table: str, version: int, recorded: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]]
) -> tuple[list[str], int]:
    """Data files named by only one of the manifest and the Delta log, missing, or whose sha256 or
    size differ from the manifest's; and how many files were checked."""
    problems, checked = [], 0
    for path in sorted(set(recorded) ^ set(current)):
        where = "manifest" if path in recorded else "Delta log"
        problems.append(f"release {version}: data file {path} is only in the {where}")
    for path in sorted(set(recorded) & set(current)):
        rel = f"{table}/{path}"
        checked += 1
        if not loc.exists(rel):
            problems.append(f"release {version}: data file {path} is missing")
            continue
        actual = loc.sha256(rel)
        if actual != recorded[path]["sha256"]:
            problems.append(
                f"release {version}: data file {path} sha256 {actual[:12]} != recorded {recorded[path]['sha256'][:12]}"
            )
        size = loc.size(rel)
        if size != recorded[path]["size"]:
            problems.append(f"release {version}: data file {path} size {size} != recorded {recorded[path]['size']}")
    return problems, checked
