"""Refusal and evasion detector: does a reply refuse, deflect, or give the official line instead of answering?

See curate/refusal/detect.py for the modes and output columns, and docs/refusal.md for the guide.
"""

from curate.refusal.config import CLASSES, KINDS, OUTPUT_COLUMNS, RefusalConfig, with_refusal_defaults
from curate.refusal.detect import VERDICT_COLUMNS, classify_refusals, describe_detector, evaluate_refusals, refusal_files
from curate.refusal.judge import JUDGE_SCHEMA, JUDGE_VERDICTS, judge_requests, parse_judge_output
from curate.refusal.model import load_detector, prepare_texts
from curate.refusal.rules import RULES_PATH, length_units, load_rules, rule_scores, rules_file

__all__ = [
    "CLASSES", "JUDGE_SCHEMA", "RULES_PATH", "JUDGE_VERDICTS", "KINDS", "OUTPUT_COLUMNS", "VERDICT_COLUMNS", "RefusalConfig",
    "classify_refusals", "describe_detector", "evaluate_refusals", "judge_requests", "length_units", "load_detector",
    "load_rules", "parse_judge_output", "prepare_texts", "refusal_files", "rule_scores", "rules_file", "with_refusal_defaults",
]
