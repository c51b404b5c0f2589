"""The benchmarks' per-step memory figure is the child's own peak, not its parent's.

Linux carries a process's ru_maxrss over fork and exec, so a small child started by a large parent
used to read as large as the parent (bench/full_size.py's `measure` read ru_maxrss). Here the parent
holds ~1 GB and starts a child that allocates ~250 MB: the figure must see the child's 250 MB and
not the parent's gigabyte.
"""

from __future__ import annotations

from pathlib import Path

from bench.full_size import measure, status_gb

REPO = Path(__file__).resolve().parents[1]

CHILD = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from bench.full_size import child_result

start = time.perf_counter()
block = bytearray(b"x") * (250 * 2**20)  # touched: every page counts in RSS
print(child_result(start, {{"held_mb": len(block) // 2**20}}))
"""


def test_a_small_child_of_a_large_parent_reports_its_own_peak(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    ballast = bytearray(b"p") * (1024 * 2**20)
    parent_rss = status_gb("self", "VmRSS")
    assert parent_rss >= 1.0, parent_rss  # the precondition: this parent is large

    result = measure("tiny", tmp_path, 1, script=str(script))

    assert result["held_mb"] == 250
    assert result["step_s"] >= 0
    # The child's own: its 250 MB and its imports, far below the parent's gigabyte.
    assert 0.25 <= result["peak_rss_gb"] < 0.8, (result, parent_rss)
    del ballast


def test_a_child_that_reports_nothing_still_gets_its_sampled_peak(tmp_path: Path) -> None:
    script = tmp_path / "quiet.py"
    script.write_text(
        "import json, time\n"
        "block = bytearray(b'x') * (300 * 2**20)\n"
        "time.sleep(0.3)  # alive across a few 50 ms samples\n"
        "print(json.dumps({'step_s': 0.3}))\n", encoding="utf-8")

    result = measure("quiet", tmp_path, 1, script=str(script))

    assert 0.3 <= result["peak_rss_gb"] < 0.6, result
