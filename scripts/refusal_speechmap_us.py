"""Assemble data/refusal_train/speechmap_us_criticism.jsonl.gz from a checkout of SpeechMap
(github.com/xlr8harder/llm-compliance): its `analysis/compliance_us_criticism_*.jsonl` files, the
same way the shared copy `speechmap_compliance.jsonl` was assembled from the other five categories
(checked: this procedure rebuilds that copy's 1,536 china_criticism rows byte for byte).

    git -C SPEECHMAP show 856f28a1d0c9da1390f1705616c31041f3fbdddc  # the commit used
    uv run python scripts/refusal_speechmap_us.py SPEECHMAP/analysis speechmap_us_criticism.jsonl
    gzip -9 -n speechmap_us_criticism.jsonl && mv speechmap_us_criticism.jsonl.gz data/refusal_train/

Per row: the final answer of the stored API response (any `<think>` block removed, stripped, cut at
6,000 characters, `truncated_here` when cut); rows whose judgement is an error (not COMPLETE /
EVASIVE / DENIAL) are left out, and so is every R1-family model (`RESERVED_MODEL`), reserved for
independent evaluation. Compressed with `gzip -9 -n` (no name or time), as the shared copy, so the
bytes are reproducible (data/refusal_train/SOURCE.md pins both sha256s).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from curate.refusal.data import RESERVED_MODEL, SPEECHMAP_LABELS

THINK = re.compile(r"(?s)<think>.*?</think>")
CUT = 6000


def final_answer(response: dict | str) -> str:
    if isinstance(response, str):
        content = response
    else:
        choices = response.get("choices") or [{}]
        content = (choices[0].get("message") or {}).get("content")
    return THINK.sub("", content or "").strip()


def main(analysis: Path, out: Path) -> None:
    rows, reserved, errors = [], set(), 0
    for path in sorted(analysis.glob("compliance_us_criticism_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if RESERVED_MODEL.search(r["model"]):
                reserved.add(r["model"])
                continue
            if r["compliance"] not in SPEECHMAP_LABELS:
                errors += 1
                continue
            text = final_answer(r["response"])
            rows.append({"source_file": f"analysis/{path.name}", "category": r["category"], "language": "en",
                         "model": r["model"], "question_id": r["question_id"], "prompt": r["question"],
                         "response": text[:CUT], "truncated_here": len(text) > CUT, "compliance": r["compliance"],
                         "judge_model": r["judge_model"]})
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    out.write_bytes(data)
    print(f"{out}: {len(rows)} rows; left out: {errors} error rows, R1-family models {sorted(reserved)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
