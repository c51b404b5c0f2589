"""Evaluation: % responses on blocked topics, satisfaction, HarmBench attack success and XSTest
over-refusal, per language and category, with bootstrap intervals and an HTML report.

    items = select_items(load_eval_set("deccp"), limit=50)
    result = run_eval(items, {"base": ep1, "tuned": ep2}, EvalConfig(samples=4), judge=judge_ep, cache=cache)
    write_outputs(result, Path("out"))   # responses/metrics/errors .parquet, metrics.json, report.html
"""

from curate.eval.metrics import METRICS, bootstrap_mean_ci, summarize
from curate.eval.report import metrics_document, render_report, write_outputs
from curate.eval.run import EvalConfig, EvalResult, run_eval
from curate.eval.sets import load_eval_set, select_items

__all__ = [
    "METRICS", "EvalConfig", "EvalResult", "bootstrap_mean_ci", "load_eval_set", "metrics_document", "render_report",
    "run_eval", "select_items", "summarize", "write_outputs",
]
