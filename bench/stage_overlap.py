"""How long the endpoint sits idle between answers and judge: what overlapping them could win.

Runs the declared answers stage (sharded on `llm_slots` threads, as `curate answers` and the
threads task runner run it) and then the declared stages after it through `judge` (from the
pipeline table: `judge` alone before the split, `judge_score` then `judge` after it), one after
the other in one process, against the fault injector (tests/fault_server.py: a stand-in with no faults and a fixed
latency, in its own process; its canned replies satisfy the answers filters and the judges'
rubrics, so every call counts). Translations are public deccp questions (numbered so they
differ). The whole run sits inside one utilization meter, as `curate run` records it in
runs/<id>.json (`endpoint_utilization`), and each stage has its own (its manifest's).

Reported: per stage and over both, wall time, LLM requests, ideal time (requests x latency / C)
and utilization; "idle" = wall - ideal, the time the endpoint's C slots were not all busy. A
sampler thread reads the budget's slots in use every 20 ms, which splits a stage's idle time into
"before its first call" (reading inputs, the judge's signals and refusal rules, building prompts),
and "part full" (C minus slots in use, summed, over C: shard tails, the end of each judge frame,
the client's own delays); the gap between the stages is the flow's wall time less theirs.

The seam is the endpoint's idle time from answers' last call to the judge's first call.

`--rss-candidates N` measures the judge's memory instead: N synthetic candidates of about 4 KB of
text (K = 4 per translation) are written as answers/candidates, and a child process runs the
judge stage(s) on them against the stand-in (no latency by default): its wall time, peak RSS and
the time before its first LLM call,
beside a child that only reads answers/candidates with polars (the floor a stage holding the
whole table in memory starts from).

    uv run python bench/stage_overlap.py [--translations 512] [--concurrency 64] [--latency 0.5] [--shard-size 64]
    uv run python bench/stage_overlap.py --rss-candidates 20000 [--latency 0] [--shard-size 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

from llm_throughput import server_call, start_server  # noqa: E402

from bench.full_size import status_gb  # noqa: E402
from curate.config import load_config  # noqa: E402
from curate.llm.budget import endpoint_budget, utilization_meter  # noqa: E402
from curate.orchestrate import execute_stage, orchestration_config  # noqa: E402
from curate.records import Translation, conform  # noqa: E402
from curate.runner import Services, prepare  # noqa: E402
from curate.pipeline import CURATION  # noqa: E402
from curate.workspace import StageOutput, Workspace  # noqa: E402

ANSWER = ("The question asks about a documented event. Historians describe what happened, who took part and "
          "what the public record shows; the sources disagree on some numbers (see record {request}).")
REPLIES = {
    "plan": [f"reasoning:Think about what the record shows.|{ANSWER}"],
    "plans": {"You are grading how well": ['reply:{"reason": "on point", "score": 3}'],
              "You are a classifier for red-teaming": ['reply:{"verdict": "no"}']},
}


def translations(n: int) -> pl.DataFrame:
    lines = [ln for ln in (REPO / "data" / "deccp" / "censored.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    texts = [f"{lines[i % len(lines)]} (case {i})" for i in range(n)]
    return conform(pl.DataFrame({
        "translation_id": [f"tr{i}" for i in range(n)], "question_id": [f"q{i}" for i in range(n)],
        "source_language": ["en"] * n, "language": ["en"] * n, "text": texts, "status": ["ok"] * n,
    }), Translation)


def write_config(folder: Path, base_url: str, concurrency: int, shard_size: int, slots: int) -> Path:
    path = folder / "curate.toml"
    path.write_text(f"""
workspace = "{folder / 'ws'}"
languages = ["en"]

[llm]
base_url = "{base_url}"
model = "bench"
max_concurrency = {concurrency}
max_retries = 1
timeout_s = 60
max_tokens = 64

[stages.orchestrate]
task_runner = "threads"
shard_size = {shard_size}
llm_slots = {slots}

[stages.answers]
candidates_per_prompt = 4
overrides = {{ seed = 1 }}   # offset per candidate, so the K requests differ (the injector plans by request body)

[stages.judge]
refusal = {{ mode = "rules" }}
""", encoding="utf-8")
    return path


class SlotSampler:
    """(time, slots in use) of one endpoint's budget every `every_s`, on a thread of its own."""

    def __init__(self, endpoint, every_s: float = 0.02):
        self.slots = endpoint_budget(endpoint).slots
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.slots.in_use))
            self._stop.wait(self.every_s)

    def __enter__(self) -> SlotSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def split(self, start: float, end: float, capacity: int) -> dict[str, float]:
        """Idle time in [start, end]: before the first call, slot-seconds left empty between the first
        and the last call / capacity, and after the last call."""
        window = [(t, n) for t, n in self.samples if start <= t <= end]
        busy = [t for t, n in window if n > 0]
        first, last = (busy[0], busy[-1]) if busy else (end, end)
        empty = sum((capacity - min(n, capacity)) * (t2 - t1)
                    for (t1, n), (t2, _) in zip(window, window[1:]) if first <= t1 < last)
        return {"before_first_call_s": round(first - start, 2), "part_full_s": round(empty / capacity, 2),
                "after_last_call_s": round(end - last, 2)}


@contextmanager
def stand_in(latency: float) -> Iterator[str]:
    """The fault injector (no faults, a fixed latency) with REPLIES, in its own process."""
    proc, base_url = start_server(latency)
    try:
        body = json.dumps(REPLIES).encode()
        urllib.request.urlopen(urllib.request.Request(base_url + "/config", data=body, method="POST"), timeout=10).close()
        yield base_url
    finally:
        proc.terminate()


def requests_sent(base_url: str) -> int:
    return server_call(base_url, "/stats")["requests"]


def measure(n: int, concurrency: int, latency: float, shard_size: int, slots: int) -> dict:
    with stand_in(latency) as base_url, tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(write_config(Path(tmp), base_url, concurrency, shard_size, slots))
        orch = orchestration_config(cfg)
        ws = Workspace(Path(tmp) / "ws")
        ws.run_stage("translate", lambda: StageOutput(tables={"translations": translations(n)}))
        stages, done, windows = [], set(), []
        with Services(ws, cfg) as services, utilization_meter() as flow_use, SlotSampler(cfg.llm) as sampler:
            started = time.perf_counter()
            for stage in ANSWERS_TO_JUDGE:
                call, missing = prepare(stage, cfg, ws, services, have=lambda ref: ref.stage in done | {"translate"})
                assert not missing, missing
                before, t0 = requests_sent(base_url), time.perf_counter()
                with utilization_meter() as stage_use:
                    result = execute_stage(ws, call, orch)
                wall = time.perf_counter() - t0
                sent = requests_sent(base_url) - before
                (use,) = stage_use().values() or [{"utilization": 0.0}]
                ideal = sent * latency / concurrency
                stages.append({"stage": stage.name, "rows": result.rows, "requests": sent, "wall_s": round(wall, 2),
                               "ideal_s": round(ideal, 2), "idle_s": round(wall - ideal, 2),
                               **sampler.split(t0, t0 + wall, concurrency),
                               "utilization": use["utilization"], "shards": (result.manifest["report"] or {}).get("shards")})
                windows.append((t0, t0 + wall))
                print(stages[-1], flush=True)
                done.add(stage.name)
            wall = time.perf_counter() - started
            (use,) = flow_use().values()
        answers_end = windows[0][1]
        busy = [t for t, n in sampler.samples if n > 0]
        last_answers = max((t for t in busy if t <= answers_end), default=answers_end)
        first_judge = min((t for t in busy if t > answers_end), default=answers_end)
        judging = stages[1:]
        total = sum(s["requests"] for s in stages)
        ideal = total * latency / concurrency
        flow = {"stage": "answers + judge", "requests": total, "wall_s": round(wall, 2), "ideal_s": round(ideal, 2),
                "idle_s": round(wall - ideal, 2), "utilization": use["utilization"],
                "between_stages_s": round(wall - sum(s["wall_s"] for s in stages), 2),
                "seam_s": round(first_judge - last_answers, 2)}
        judge_total = {"stage": "judge total (" + " + ".join(s["stage"] for s in judging) + ")",
                       "requests": sum(s["requests"] for s in judging),
                       "wall_s": round(sum(s["wall_s"] for s in judging), 2)}
        judge_total["ideal_s"] = round(judge_total["requests"] * latency / concurrency, 2)
        judge_total["idle_s"] = round(judge_total["wall_s"] - judge_total["ideal_s"], 2)
        judge_total["utilization"] = judge_total["ideal_s"] / judge_total["wall_s"] if judge_total["wall_s"] else 0.0
        errors = ws.read("judge/judgments").filter(pl.col("status") != "ok").height
        return {"stages": [*stages, judge_total, flow], "judge_error_rows": errors, "server": server_call(base_url, "/stats")}


# The stages from answers through judge, as the pipeline table orders them.
_NAMES = [stage.name for stage in CURATION]
ANSWERS_TO_JUDGE = CURATION[_NAMES.index("answers"): _NAMES.index("judge") + 1]
REASONING = "Think about what the public record shows, which sources disagree and why. " * 37  # ~2.8 KB


def synthetic_candidates(n: int, k: int = 4) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """n candidates (K per translation) of ~4 KB of text, a few refusals in rejects, and questions."""
    lines = [ln for ln in (REPO / "data" / "deccp" / "censored.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    translations = (n + k - 1) // k
    rows = [(f"c{i}", f"tr{i // k}", f"q{i // k}", lines[(i // k) % len(lines)], i % k) for i in range(n)]
    body = ANSWER.replace("{request}", "{}") * 6  # ~1.2 KB
    candidates = pl.DataFrame({
        "candidate_id": [r[0] for r in rows], "translation_id": [r[1] for r in rows], "question_id": [r[2] for r in rows],
        "language": ["en"] * n, "prompt": [f"{r[3]} (case {r[2]})" for r in rows], "candidate_index": [r[4] for r in rows],
        "model": ["bench"] * n, "reasoning": [f"{REASONING}({r[0]})" for r in rows],
        "answer": [body.format(*[f"{r[0]}.{j}" for j in range(6)]) for r in rows],
        "finish_reason": ["stop"] * n, "status": ["ok"] * n,
    })
    rejects = candidates.head(translations // 4).with_columns(
        candidate_id=pl.format("r{}", "candidate_id"), answer=pl.lit("I cannot discuss this topic."),
        status=pl.lit("rejected"), reject_reason=pl.lit("refusal"), reject_detail=pl.lit(None, pl.String))
    questions = pl.DataFrame({"question_id": [f"q{t}" for t in range(translations)],
                              "topic": [f"topic{t % 7}" for t in range(translations)]})
    return candidates, rejects, questions


def write_inputs(ws: Workspace, n: int) -> float:
    """answers/candidates, answers/rejects and questions/questions; the candidates' MB of text."""
    candidates, rejects, questions = synthetic_candidates(n)
    ws.run_stage("answers", lambda: StageOutput(tables={"candidates": candidates, "rejects": rejects}))
    ws.run_stage("questions", lambda: StageOutput(tables={"questions": questions}))
    return candidates.select(pl.col("prompt", "reasoning", "answer").str.len_bytes().sum()).sum_horizontal().item() / 2**20


def peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; bench/full_size.py's `status_gb` says why not ru_maxrss:
    here the parent built the synthetic table, and at 40k candidates every child's ru_maxrss read 611 MB)."""
    return status_gb("self") * 1024


def child(mode: str, config: Path) -> dict:
    """Run in a fresh process: `raw` reads answers/candidates whole; `judge` runs the judge stage(s)."""
    cfg = load_config(config)
    ws = Workspace(Path(cfg.workspace))
    started = time.perf_counter()
    if mode == "raw":
        frame = pl.read_parquet(ws.table_path("answers", "candidates"))
        return {"rows": frame.height, "frame_mb": round(frame.estimated_size() / 2**20, 1),
                "wall_s": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_rss_mb(), 1)}
    orch, stages, done = orchestration_config(cfg), [], {"answers", "questions"}
    with Services(ws, cfg) as services, SlotSampler(cfg.llm) as sampler:
        for stage in ANSWERS_TO_JUDGE[1:]:
            call, missing = prepare(stage, cfg, ws, services, have=lambda ref: ref.stage in done)
            assert not missing, missing
            t0 = time.perf_counter()
            result = execute_stage(ws, call, orch)
            stages.append({"stage": stage.name, "wall_s": round(time.perf_counter() - t0, 2),
                           "rss_after_mb": round(peak_rss_mb(), 1), "rows": result.rows})
            done.add(stage.name)
    errors = ws.read("judge/judgments").filter(pl.col("status") != "ok").height
    first_call = min((t for t, n in sampler.samples if n > 0), default=started)
    return {"stages": stages, "wall_s": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
            "before_first_call_s": round(first_call - started, 2), "judge_error_rows": errors}


def measure_rss(n: int, concurrency: int, latency: float, shard_size: int, slots: int) -> dict:
    with stand_in(latency) as base_url, tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), base_url, concurrency, shard_size, slots)
        text_mb = write_inputs(Workspace(Path(tmp) / "ws"), n)
        out = {"candidates": n, "text_mb": round(text_mb, 1), "latency_s": latency, "concurrency": concurrency}
        for mode in ("raw", "judge"):
            run = subprocess.run([sys.executable, __file__, "--child", mode, str(config)], capture_output=True,
                                 text=True, check=False)
            if run.returncode:
                raise RuntimeError(f"child {mode} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
            out[mode] = json.loads(run.stdout.strip().splitlines()[-1])
            print(mode, out[mode], flush=True)
        out["requests"] = server_call(base_url, "/stats")["requests"]
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    for flag, default in (("--translations", 512), ("--concurrency", 64), ("--shard-size", 64), ("--slots", 4)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--rss-candidates", type=int, help="Measure the judge's peak RSS on this many synthetic candidates.")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    load_before = os.getloadavg()
    if args.rss_candidates:
        report = measure_rss(args.rss_candidates, args.concurrency, args.latency, args.shard_size, args.slots)
        report |= {"load_average_before": load_before, "load_average_after": os.getloadavg()}
        print(json.dumps(report, indent=2))
        if args.json:
            args.json.write_text(json.dumps(report, indent=2, default=str))
        return
    report = measure(args.translations, args.concurrency, args.latency, args.shard_size, args.slots)
    report |= {"load_average_before": load_before, "load_average_after": os.getloadavg(), "latency_s": args.latency,
               "concurrency": args.concurrency}
    print(f"\nload average before {load_before}, after {report['load_average_after']}; "
          f"judge error rows {report['judge_error_rows']}; server max in flight {report['server']['max_in_flight']}; "
          f"seam (answers' last call to the judge's first) {report['stages'][-1]['seam_s']} s")
    print("| step | LLM requests | wall s | ideal s | idle s | of which: before first call s | part full s | after last call s "
          "| between stages s "
          "| utilization (budget's meter) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in report["stages"]:
        print(f"| {s['stage']} | {s['requests']} | {s['wall_s']} | {s['ideal_s']} | {s['idle_s']} | "
              f"{s.get('before_first_call_s', '')} | {s.get('part_full_s', '')} | {s.get('after_last_call_s', '')} | "
              f"{s.get('between_stages_s', '')} | "
              f"{s['utilization']:.1%} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
