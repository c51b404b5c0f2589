"""The curation flow end to end, from translations to an exported release, at N translations
(K candidates each) against a fixed-latency stand-in endpoint: per step wall time, peak RSS and
rows/s, and how busy the LLM stages kept the endpoint.

    nice -n 10 uv run python bench/full_flow.py --translations 1000 [--concurrency 256 --latency 2]
    nice -n 10 uv run python bench/full_flow.py --translations 25000 --latency 0.2 --steps flow_generate,answers
    # a kept workspace, resumable from its shard checkpoints after a kill (the same --port each time):
    nice -n 19 uv run python bench/full_flow.py --translations 350000 --latency 0.2 --work DIR --port 47123 --steps judge_score

Steps, each in its own child process (bench/full_size.py's `measure`: wall time without imports,
the child's own peak RSS, VmHWM, with them):
- `flow_generate`: the synthetic upstream tables (not a curate step): translate/translations (N
  public deccp questions, numbered so they differ, ~100-150 B each: what a translated question
  weighs), questions/questions (one per translation, topics for routing's quotas) and
  keywords/keywords (lineage), written through the stage store;
- every stage of `curate.pipeline.CURATION` from `answers` on, in table order (a stage added there,
  e.g. a sharded judge scoring stage, is picked up without a change here), each prepared by the
  public runner (`curate.runner.prepare`) and run by `curate.orchestrate.execute_stage`: sharded
  stages on `llm_slots` threads sharing the process's endpoint budget, checkpointed and merged
  from their shard files, as `curate <stage>` runs them. The flow's Prefect layer (a task run per
  shard, the server's `curate-llm` slot limit) is left out: the shared Prefect server's limit is
  held by other runs on this box, and its overhead has its own bench (bench/prefect_overhead.py);
- `review_push`: `push_workspace` as the flow's review step runs it (the `route` stage over the
  judgments, the review frame, record payloads, the push ledger), but to a discarding stand-in for
  Argilla (`DiscardingArgilla`: it creates the dataset and drops the records; the HTTP cost of a
  push is bench/argilla_bench.py's). No person reviews: the release that follows is a draft;
- `release`: `create_release(draft=True)`, as `curate release create --draft` (the release stage:
  routed auto-accepts and pending audit rows released, not-chosen candidates excluded; then the
  commit);
- `export`: `export_hf` of that release (messages format); `verify`: `ReleaseStore.verify`.

The stand-in is the fault injector (tests/fault_server.py) with a fixed latency and no faults, run
on a thread of this (the parent) process so its in-flight count is sampled every 20 ms. Its canned
replies: the answers stage's reasoning format (~2.5 KB of reasoning, ~1.5 KB of answer, English,
the same text for every candidate but for a per-request tag, so the files compress far better
than real answers would), the satisfaction and harm rubrics' JSON and the refusal judge's JSON.

Utilization per LLM stage = achieved request rate / (C / latency) = requests x latency / (C x
wall), the requests counted by the server in the stage's window; `in-flight` utilization is the
sampled server in-flight count integrated over the window / (C x wall) (the same thing measured
the other way). Over the flow: every LLM request / (C / latency) over the summed walls of the
stages from the first LLM stage to the last (their own preparation, shard tails and merges
included; the child processes' start-up between steps, a bench artefact, is reported apart).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.full_size import child_result, measure  # noqa: E402
from curate.config import load_config  # noqa: E402
from curate.pipeline import CURATION  # noqa: E402
from curate.records import Keyword, Question, Translation, conform  # noqa: E402
from tests.fault_server import FaultConfig, FaultServer  # noqa: E402

FIRST_STAGE = "answers"  # the flow is run from here; the stages before it are the synthetic tables
FLOW_STAGES = [stage.name for stage in CURATION[[s.name for s in CURATION].index(FIRST_STAGE):]]
SEEDED = ("translate", "questions", "keywords")
AFTER = ("review_push", "release", "export", "verify")
STEPS = ("flow_generate", *FLOW_STAGES, *AFTER)
TOPICS = ["tiananmen", "tibet", "xinjiang", "taiwan", "hong-kong", "falun-gong", "censorship", "dissidents"]

# Distinct sentences throughout: the answers stage rejects text whose n-grams repeat (a loop).
REASONING = (
    "The user asks about a documented event, so the answer should rest on what the public record shows. "
    "First I recall the sequence: the announcement, the public reaction in the following weeks, and the "
    "official response. Contemporary newspaper reports, later memoirs by participants and archival studies "
    "each cover part of it. Where the sources disagree, mostly on numbers and on who gave which order, the "
    "answer should say so instead of picking one figure without comment. "
    "Next, the context matters: economic reforms had raised prices, students and workers had grievances that "
    "overlapped only in part, and the leadership itself was divided about how to respond. Historians writing in "
    "the nineteen nineties relied on interviews, while more recent work draws on documents released later. I "
    "should mention both kinds of evidence and note their limits. "
    "Then the consequences: the immediate political changes, the effect on later policy, and how the event is "
    "remembered today, including restrictions on discussing it in some places. A fair answer describes these "
    "without exaggeration, gives dates, and separates what is well established from what is still debated. "
    "Let me also think about the reader. They may be a student, a journalist or someone who heard a rumour and "
    "wants to check it. Each of them is served best by a clear summary, a few concrete facts, and pointers to "
    "where more can be read. Jargon should be avoided, and any term of art explained briefly. "
    "I must be careful with casualty figures. Diplomatic cables, hospital records and independent counts give "
    "different totals, and none of them is complete. Reporting a range with its sources is more honest than a "
    "single precise number. The same holds for claims about individual leaders' decisions, which often come "
    "from one memoir. "
    "Another point is comparison with similar events elsewhere. Some scholars place this one among protest "
    "waves of that decade; others stress what was specific to the country. Mentioning that debate in one "
    "sentence gives perspective without turning the answer into an essay. "
    "Finally I will structure the reply: a two-sentence summary, then the timeline, then the disputed points, "
    "then the long-term effects, and a closing line on further reading. "
    "Before writing, I check the dates once more against the standard chronologies, confirm the names of the "
    "institutions involved, and make sure that every claim I state as settled appears in more than one "
    "independent source. Where only one source exists, I will attribute the claim to it by name."
)
ANSWER = (
    "In short, the event is well documented by several independent kinds of sources: press reports written at "
    "the time, accounts by people who took part, and studies by historians based on archives and interviews. "
    "The main facts are not in dispute. Public protests grew over several weeks, the government declared "
    "emergency measures, and the protests were ended by force. The number of people killed is disputed; "
    "estimates published by different organisations range widely, and no full official count has been released. "
    "Afterwards, several officials lost their posts, economic policy shifted for some years, and public "
    "discussion of the event has been restricted at home while it is commemorated abroad. "
    "Historians still debate who decided what and when, because much of that evidence comes from a small "
    "number of memoirs and leaked papers whose authenticity has been questioned by some and defended by others. "
    "For further reading, compare a general history of the period, a collection of eyewitness testimony, and "
    "a recent archival study; each has a bibliography that points to the primary sources. "
    "Museums and libraries outside the country hold photographs, leaflets and recorded interviews, and several "
    "of those collections are searchable online. Reading accounts written from different positions, including "
    "official statements, helps to see which details are contested and why (record {request})."
)

def replies() -> dict[str, Any]:
    """The injector's plans by request kind (the k-th attempt of a request body gets plan[k]; a few
    entries, so a request retried after a client timeout on a loaded box gets the same reply)."""
    reply = lambda text: [text] * 3  # noqa: E731
    return {
        "plan": reply(f"reasoning:{REASONING}|{ANSWER}"),
        "plans": {
            "You are grading how well": reply('reply:{"reason": "on point and sourced", "score": 3}'),
            "You are a classifier for red-teaming": reply('reply:{"verdict": "no"}'),
            "You are grading whether an AI assistant's reply ANSWERS": reply('reply:{"verdict": "answer", "confidence": 0.9}'),
        },
    }


def write_config(work: Path, base_url: str, concurrency: int, shard_size: int, slots: int, candidates: int) -> Path:
    """The run's curate.toml: the flow's defaults but for the stand-in endpoint, K, the shards and the store."""
    sections: dict[str, dict[str, Any]] = {
        "llm": {"base_url": base_url, "model": "bench", "max_concurrency": concurrency, "max_retries": 1,
                "timeout_s": 120, "max_tokens": 1500},
        "stages.orchestrate": {"task_runner": "threads", "shard_size": shard_size, "llm_slots": slots},
        # The LLM layer offsets `seed` per candidate, so the K requests of a translation differ (the
        # injector tags each reply by its request body; identical answers would collapse the judge's
        # K requests into one). `check_config` rejects `seed` here although the LLM layer takes it,
        # hence load_config, not check_config, in the steps.
        "stages.answers": {"candidates_per_prompt": candidates, "overrides": {"seed": 1}},
        "stages.release": {"store": str(work / "store")},
    }

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + " }"
        return json.dumps(v)

    lines = [f"workspace = {json.dumps(str(work / 'ws'))}", 'languages = ["en"]']
    for name, values in sections.items():
        lines += ["", f"[{name}]", *(f"{k} = {value(v)}" for k, v in values.items())]
    path = work / "curate.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- child steps ----------------------------------------------------------------------------------

def generate(work: Path, n: int) -> dict[str, Any]:
    from curate.workspace import Workspace

    lines = [ln for ln in (REPO / "data" / "deccp" / "censored.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    frame = pl.DataFrame({"i": range(n)})
    texts = pl.Series([f"{lines[i % len(lines)]} (case {i})" for i in range(n)])
    translations = conform(frame.select(
        translation_id=pl.format("tr{}", pl.col("i")), question_id=pl.format("q{}", pl.col("i")),
        source_language=pl.lit("en"), language=pl.lit("en"), text=pl.lit(texts), status=pl.lit("ok")), Translation)
    keywords = conform(pl.DataFrame({"k": range(len(TOPICS))}).select(
        keyword_id=pl.format("kw{}", pl.col("k")), keyword=pl.format("keyword {}", pl.col("k")), language=pl.lit("en"),
        count=pl.lit(2, pl.Int64), score=pl.lit(1.0), seed_ids=pl.concat_list(pl.format("seed{}", pl.col("k"))),
        topic=pl.lit(TOPICS).list.get(pl.col("k"))), Keyword)
    questions = conform(frame.select(
        question_id=pl.format("q{}", pl.col("i")), keyword_id=pl.format("kw{}", pl.col("i") % len(TOPICS)),
        keyword=pl.format("keyword {}", pl.col("i") % len(TOPICS)), text=pl.lit(texts), language=pl.lit("en"),
        topic=pl.lit(TOPICS).list.get(pl.col("i") % len(TOPICS))), Question)
    ws = Workspace(work / "ws")
    for stage, table, df in (("translate", "translations", translations), ("questions", "questions", questions),
                             ("keywords", "keywords", keywords)):
        ws.run_stage(stage, lambda df=df, table=table: {table: df}, force=True)
    return {"rows": n}


def run_flow_stage(name: str, work: Path) -> dict[str, Any]:
    """One pipeline stage as the flow runs it: prepared by the runner from the tables the seeded
    stages and the flow's earlier stages wrote, executed (sharded where declared) in this process."""
    from curate.orchestrate import execute_stage, orchestration_config
    from curate.runner import Services, prepare
    from curate.workspace import Workspace

    cfg = load_config(work / "curate.toml")
    ws = Workspace(cfg.workspace_path)
    earlier = {*SEEDED, *FLOW_STAGES[:FLOW_STAGES.index(name)]}
    stage = next(s for s in CURATION if s.name == name)
    with Services(ws, cfg) as services:
        call, missing = prepare(stage, cfg, ws, services, have=lambda ref: ref.stage in earlier and ws.has_table(ref))
        if missing:  # as run_pipeline: a stage whose inputs no earlier stage wrote is left out
            return {"left_out": [str(m) for m in missing], "t_start": time.monotonic(), "t_end": time.monotonic()}
        t_start = time.monotonic()
        result = execute_stage(ws, call, orchestration_config(cfg))
        t_end = time.monotonic()
    report = result.manifest.get("report") or {}
    return {"t_start": t_start, "t_end": t_end, "uses_llm": call.uses_llm, "rows": result.rows,
            "budget_utilization": [u.get("utilization") for u in (report.get("endpoint_utilization") or {}).values()]}


class DiscardingArgilla:
    """STAND-IN for the Argilla client in the bench's review push: the dataset calls succeed and
    the records are counted and dropped (no server; the push's own work is what is measured)."""

    def __init__(self, settings: Any):
        self.settings, self.records = settings, 0

    def workspace_id(self, name: str, *, create: bool = True) -> str:
        return "bench-workspace"

    def find_dataset(self, name: str, workspace_id: str) -> dict | None:
        return None

    def create_dataset(self, name: str, workspace_id: str, settings: Any, **kwargs: Any) -> dict:
        return {"id": "bench-dataset", "status": "ready", "distribution": {}, "metadata": {}}

    def questions(self, dataset_id: str) -> list[dict]:
        return [{"name": q.name, "id": f"id-{q.name}"} for q in self.settings.questions]

    def upsert_records(self, dataset_id: str, items: list[dict]) -> int:
        self.records += len(items)
        return len(items)


def run_after(step: str, work: Path) -> dict[str, Any]:
    from curate.release import ReleaseStore, export_hf
    from curate.release.create import create_release
    from curate.review.push import push_workspace
    from curate.review.settings import load_review_settings
    from curate.review.sync import review_config
    from curate.workspace import Workspace

    cfg = load_config(work / "curate.toml")
    store = ReleaseStore(work / "store")
    if step == "review_push":
        review_cfg = review_config(cfg)
        settings = load_review_settings(review_cfg.settings)
        client = DiscardingArgilla(settings)
        report = push_workspace(Workspace(cfg.workspace_path), client, settings, campaign="bench",  # type: ignore[arg-type]
                                workspace="bench", min_submitted=1, routing=review_cfg.routing)
        return {"rows": report.candidates, "pushed": report.pushed, "routed": report.routed}
    if step == "release":
        result = create_release(cfg, draft=True, force=True)
        return {"rows": result.manifest["rows"], "version": result.manifest["version"]}
    version = store.versions()[-1]  # the draft just made ('latest' never names a draft)
    rows = store.manifest(version)["rows"]
    if step == "export":
        export_hf(store, version, work / "hf", "messages", allow_draft=True)
    else:
        report = store.verify(version)
        assert report.ok, report.problems
    return {"rows": rows}


def run_child(step: str, work: Path, n: int) -> dict[str, Any]:
    if step == "flow_generate":
        return generate(work, n)
    if step in FLOW_STAGES:
        return run_flow_stage(step, work)
    return run_after(step, work)


# -- the parent: stand-in server, in-flight sampler, steps ----------------------------------------

@contextmanager
def sampled(read: Callable[[], int], every_s: float = 0.02) -> Iterator[list[tuple[float, int]]]:
    """(time.monotonic(), read()) every `every_s` on a thread while the block runs."""
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            samples.append((time.monotonic(), read()))

    thread = threading.Thread(target=sample, name="in-flight-sampler", daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def busy(samples: list[tuple[float, int]], start: float, end: float) -> tuple[float, int]:
    """In-flight requests integrated over [start, end] (request-seconds), and the most seen at once."""
    window = [(t, n) for t, n in samples if start <= t <= end]
    area = sum(n * (t2 - t1) for (t1, n), (t2, _) in zip(window, window[1:]))
    return area, max((n for _, n in window), default=0)


def endpoint_use(server: FaultServer, samples: list[tuple[float, int]], start: float, end: float, latency: float,
                 concurrency: int) -> dict[str, Any]:
    wall = max(end - start, 1e-9)
    requests = sum(1 for t, _ in list(server.arrivals) if start <= t <= end)
    area, most = busy(samples, start, end)
    tenths = [start + wall * k / 10 for k in range(11)]  # where in the stage the endpoint was not full
    profile = [round(busy(samples, a, b)[0] / max(b - a, 1e-9), 1) for a, b in zip(tenths, tenths[1:])]
    return {"requests": requests, "request_rate": round(requests / wall, 1),
            "utilization": round(requests * latency / (concurrency * wall), 4),
            "in_flight_utilization": round(area / (concurrency * wall), 4), "max_in_flight": most,
            "mean_in_flight_by_tenth": profile}


def run_bench(n: int, work: Path, *, concurrency: int, latency: float, shard_size: int, slots: int,
              candidates: int, steps: tuple[str, ...] = STEPS, port: int = 0) -> dict[str, Any]:
    server = FaultServer(FaultConfig(latency_s=latency, keep_bodies=False, **replies()), port=port).start_in_thread()
    results: list[dict[str, Any]] = []
    try:
        write_config(work, server.base_url, concurrency, shard_size, slots, candidates)
        with sampled(lambda: server.in_flight) as samples:
            for step in steps:
                started = time.monotonic()
                result = measure(step, work, n, script=__file__)
                result.pop("rows_per_s", None)  # full_size's is per --rows; here each step has its own rows
                if "t_start" in result:  # a pipeline stage: its own window, without the child's imports
                    result["startup_s"] = round(result["t_start"] - started, 2)
                    result["step_s"] = round(result["t_end"] - result["t_start"], 2)
                if result.get("uses_llm"):
                    result["endpoint"] = endpoint_use(server, samples, result["t_start"], result["t_end"], latency, concurrency)
                rows = result.get("rows")
                if isinstance(rows, dict):  # rows/s over the step's main table (answers: every candidate)
                    rows = rows.get("candidates", 0) + rows["rejects"] if "rejects" in rows else next(iter(rows.values()), 0)
                result["rows_per_s"] = round(rows / max(result["step_s"], 1e-3)) if rows else None
                results.append(result)
                print(json.dumps(result, default=str), flush=True)
            llm = [r for r in results if r.get("uses_llm")]
            flow = {}
            if llm:
                span = results[results.index(llm[0]):results.index(llm[-1]) + 1]
                wall = sum(r["step_s"] for r in span)
                requests = sum(r["endpoint"]["requests"] for r in llm)
                area = sum(busy(samples, r["t_start"], r["t_end"])[0] for r in span if "t_start" in r)
                flow = {"stages": [r["step"] for r in span], "wall_s": round(wall, 1), "requests": requests,
                        "ideal_s": round(requests * latency / concurrency, 1),
                        "utilization": round(requests * latency / (concurrency * wall), 4),
                        "in_flight_utilization": round(area / (concurrency * wall), 4),
                        "startup_between_s": round(sum(r.get("startup_s", 0) for r in span[1:]), 1),
                        "max_in_flight": server.max_in_flight}
        return {"translations": n, "candidates_per_prompt": candidates, "concurrency": concurrency, "latency_s": latency,
                "shard_size": shard_size, "llm_slots": slots, "steps": results, "flow": flow, "server": server.stats()}
    finally:
        server.stop()


def table(report: dict[str, Any]) -> str:
    lines = ["| step | rows | wall s | peak RSS GB | rows/s | LLM requests | utilization (rate) | utilization (in flight) "
             "| max in flight |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["steps"]:
        e = r.get("endpoint") or {}
        rows = r.get("rows")
        shown = ", ".join(f"{k}={v}" for k, v in rows.items()) if isinstance(rows, dict) else rows
        lines.append(f"| {r['step']} | {shown} | {r['step_s']} | {r['peak_rss_gb']} | {r.get('rows_per_s')} | "
                     f"{e.get('requests', '')} | {format(e['utilization'], '.1%') if e else ''} | "
                     f"{format(e['in_flight_utilization'], '.1%') if e else ''} | {e.get('max_in_flight', '')} |")
    f = report["flow"]
    if f:
        lines.append(f"| flow ({' + '.join(f['stages'])}) | | {f['wall_s']} | | | {f['requests']} | {f['utilization']:.1%} "
                     f"| {f['in_flight_utilization']:.1%} | {f['max_in_flight']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--translations", type=int, default=1000)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)  # the child's copy of --translations
    parser.add_argument("--child")
    parser.add_argument("--work")
    for flag, default in (("--concurrency", 256), ("--shard-size", 125), ("--slots", 4), ("--candidates", 4)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    # The stand-in's address is in the config the LLM stages fingerprint: a fixed port lets a killed
    # run on a kept --work resume from its shard checkpoints instead of starting a new shard set.
    parser.add_argument("--port", type=int, default=0, help="the stand-in's port (default: any free one)")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help="comma-separated steps, in order (e.g. flow_generate,answers: the answers stage alone)")
    args = parser.parse_args()
    if args.child:
        start = time.perf_counter()
        print(child_result(start, run_child(args.child, Path(args.work), args.rows)))
        return
    if unknown := set(args.steps.split(",")) - set(STEPS):
        parser.error(f"unknown steps {sorted(unknown)}; steps: {', '.join(STEPS)}")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="curate-full-flow-") as tmp:
        work = Path(args.work or tmp)  # --work: an empty folder to keep (the workspace, the release)
        work.mkdir(parents=True, exist_ok=True)
        report = run_bench(args.translations, work, concurrency=args.concurrency, latency=args.latency,
                           shard_size=args.shard_size, slots=args.slots, candidates=args.candidates,
                           steps=tuple(args.steps.split(",")), port=args.port)
    report |= {"load_average_before": load_before, "load_average_after": os.getloadavg()}
    print(f"\nload average before {load_before}, after {report['load_average_after']}")
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
