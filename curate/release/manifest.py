"""What `verify` compares between a release's manifest and the body recorded in its Delta commit.

The manifest is the commit body plus the checksums of the data files, which the commit cannot hold
(they exist only after it); every other key must be equal, so no field of a manifest (config
hash, parent, models, campaigns, counts, notes, timestamps) can be edited unnoticed.
"""

from __future__ import annotations

import json
from typing import Any

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
