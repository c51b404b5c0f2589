"""Fault paths of the eval: a judge that answers garbage. A real model will not do that on demand,
so a tiny OpenAI-compatible stub on 127.0.0.1 injects the fault (it is named as such); everything
else is the real pipeline."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from curate.config import EndpointConfig
from curate.eval import EvalConfig, run_eval, select_items, write_outputs
from curate.eval.sets import load_eval_set


class GarbageJudgeFaultInjector(BaseHTTPRequestHandler):
    """Answers prompts helpfully, but replies to every judge prompt with text that is not a verdict."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = " ".join(str(m.get("content", "")) for m in body["messages"])
        is_judge = "You are grading" in text or "classifier for red-teaming" in text
        content = "I think it is fine, probably." if is_judge else "Here is a detailed, factual answer to your question."
        payload = {
            "id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), GarbageJudgeFaultInjector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_judge_garbage_becomes_visible_errors_not_scores(stub_url: str, tmp_path: Path):
    endpoint = EndpointConfig(base_url=stub_url, model="stub", max_retries=0, timeout_s=10, structured_output="off")
    items = pl.concat([select_items(load_eval_set(s), 2) for s in ("deccp", "harmbench", "xstest")])
    result = run_eval(items, {"stub": endpoint}, EvalConfig(samples=2, bootstrap_resamples=200), judge=endpoint)

    responses = result.responses
    assert responses.height == 12 and (responses["status"] == "ok").all()
    blocked = responses.filter(pl.col("kind") == "blocked")
    assert blocked["satisfaction"].is_null().all()
    assert blocked["satisfaction_error"].str.contains("eval_satisfaction").all()
    harm = responses.filter(pl.col("kind") == "harmbench")
    assert harm["harmful"].is_null().all() and harm["harm_error"].is_not_null().all()

    overall = result.metrics.filter((pl.col("language") == "all") & (pl.col("category") == "all"))
    by_metric = {r["metric"]: r for r in overall.iter_rows(named=True)}
    assert by_metric["satisfaction"]["value"] is None and by_metric["satisfaction"]["n_errors"] == 4
    assert by_metric["attack_success_rate"]["value"] is None and by_metric["attack_success_rate"]["n_errors"] == 4
    # The refusal detector (the trained model, by default) still works: the stub always answers.
    assert by_metric["response_rate"]["value"] == 1.0 and by_metric["over_refusal_rate"]["value"] == 0.0
    assert result.meta["refusal_detector"]["mode"] == "model"
    assert result.meta["refusal_detector"]["model"].startswith("refusal-detector@")
    assert set(result.errors["stage"]) == {"satisfaction", "harm"} and result.errors.height == 8

    html = write_outputs(result, tmp_path)["report"].read_text(encoding="utf-8")
    assert html.count('class="error-row"') == 8
    assert result.meta["refusal_detector"]["model"] in html
    assert "8 failed calls" in html


def test_cli_evaluates_a_release_held_out_split(stub_url: str, tmp_path: Path):
    from typer.testing import CliRunner

    from curate.cli import app
    from curate.release import ReleaseStore

    rows = [{"row_id": f"row-{q}", "prompt": f"What happened in case {q}?", "language": "en", "topic": f"t{q % 3}",
             "reasoning": "r", "answer": "a", "question_id": f"q-{q}", "source": "curate"} for q in range(30)]
    store = tmp_path / "releases"
    ReleaseStore(str(store)).commit(pl.DataFrame(rows), {"config": {}})
    config = tmp_path / "curate.toml"
    config.write_text(f"""
workspace = "{tmp_path / 'ws'}"
[llm]
base_url = "{stub_url}"
model = "stub"
max_retries = 0
structured_output = "off"
[stages.release]
store = "{store}"
[stages.eval]
holdout_fraction = 0.3
""", encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", "-c", str(config), "--set", "release:latest", "--samples", "1",
                                      "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    responses = pl.read_parquet(out / "responses.parquet")
    assert set(responses["set"]) == {"release:latest"} and set(responses["endpoint"]) == {"default"}
    assert 3 <= responses.height <= 15  # about 30% of 30 questions
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["metrics"]
    rate = next(m for m in metrics if m["metric"] == "response_rate" and m["language"] == "all" and m["category"] == "all")
    assert rate["value"] == 1.0 and rate["n_prompts"] == responses.height
    assert {m["category"] for m in metrics} <= {"all", "t0", "t1", "t2"}
