"""Reproduce docs/refusal.md "Tried and not shipped (second round)": by-model cross-validation of
refusal-detector variants (fastText settings, rule hits / position / prompt tokens, window).

    nice -n 10 uv run python scripts/refusal_experiments.py e0 sub36 wng3 rules prompt [--fold-seed 11]

Each run: the shipped training data cut to the final answer, 5 folds grouped by model, one fresh
fastText process per fold (the worker of curate/refusal/train.py, so training is deterministic),
an isotonic map fit on the run's own out-of-fold scores of real replies, threshold 0.5. Prints one
JSON line per run: accuracy overall / en / zh / fi, the share right per gold class, EVASIVE recall in
en and fi, and the largest fold's .ftz size. Public training data only (curate.refusal.data).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from curate.refusal.config import CLASSES, RefusalConfig
from curate.refusal.data import DATA_DIR, REFUSAL_EVAL_FILE, XSTEST_DIR, check_training_frame, load_sources
from curate.refusal.model import TrainedDetector, prepare_texts
from curate.refusal.reasoning import final_answers
from curate.refusal.rules import rule_scores
from curate.refusal.train import _FIT_WORKER, group_folds, isotonic

BASE = {"epoch": 10, "lr": 0.5, "dim": 32, "wordNgrams": 2, "minCount": 1, "bucket": 50_000, "seed": 1, "minn": 0, "maxn": 0}
# name -> (fastText overrides, (head, tail) window, extra tokens)
RUNS = {
    "e0": ({}, (1000, 300), None),
    "sub36": ({"minn": 3, "maxn": 6, "bucket": 200_000}, (1000, 300), None),
    "wng3": ({"wordNgrams": 3, "bucket": 200_000}, (1000, 300), None),
    "ep20": ({"epoch": 20}, (1000, 300), None),
    "dim64": ({"dim": 64}, (1000, 300), None),
    "win15_5": ({}, (1500, 500), None),
    "rules": ({}, (1000, 300), "rules"),
    "pos12": ({}, (1000, 300), "position"),
    "prompt": ({}, (1000, 300), "prompt"),
}


def training_frame() -> pl.DataFrame:
    """The shipped training rows, cut to the final answer, with each row's request (`prompt`)."""
    df = check_training_frame(load_sources()[0], "training data")
    df = df.with_columns(final_answers(df["text"]).alias("text")).filter(pl.col("text").str.strip_chars().str.len_chars() > 0)
    prompts = {}
    for line in gzip.decompress((DATA_DIR / "speechmap_compliance.jsonl.gz").read_bytes()).decode().splitlines():
        r = json.loads(line)
        prompts[("speechmap", r["question_id"], r["language"])] = r["prompt"]
    for path in sorted(XSTEST_DIR.glob("*.csv")):
        for r in csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))):
            prompts[("xstest", f"xstest-{r['id']}", "en")] = r["prompt"]
    for line in REFUSAL_EVAL_FILE.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        prompts[("refusal_eval/tune", r["id"], r["language"])] = r["prompt"]
    source = df["source"].str.replace("/opening", "", literal=True)
    return df.with_columns(pl.Series("prompt", [prompts.get(k) for k in zip(source, df["question_id"], df["language"], strict=True)]))


def extra_tokens(df: pl.DataFrame, prepared: pl.Series, kind: str | None) -> tuple[list[str], list[str]]:
    """Tokens appended to each row for training and for scoring (the prompt run trains with the
    prompt left off a seeded 30% of rows, so it also works without one)."""
    if kind is None:
        empty = [""] * df.height
        return empty, empty
    if kind == "rules":
        sc = rule_scores(df.select(pl.col("text").alias("response")), RefusalConfig(mode="rules"), "response")
        toks = [" ".join(f"__rule_{k}_{'hi' if v >= 0.6 else 'lo'}__" for k, v in zip(("hard", "deflection", "official_line"), row, strict=True) if v >= 0.25)
                for row in sc.select("score_hard", "score_deflection", "score_official_line").iter_rows()]
        return toks, toks
    if kind == "position":
        toks = [" ".join(["h_" + w for w in s.split()[:12]] + ["t_" + w for w in s.split()[-12:]]) for s in prepared]
        return toks, toks
    asked = [" ".join("q_" + w for w in s.split()) for s in prepare_texts(df["prompt"].fill_null(""), 300, 0)]
    drop = np.random.default_rng(7).random(df.height) < 0.3
    return [("" if d else q) for q, d in zip(asked, drop, strict=True)], asked


def fit_lines(lines: list[str], labels: list[str], args: dict, workdir: Path) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    rows = [f"__label__{lab} {t}" for lab, t in zip(labels, lines, strict=True) if t]
    order = np.random.default_rng(args["seed"]).permutation(len(rows))
    train_file, out = workdir / "train.txt", workdir / "m.ftz"
    train_file.write_text("\n".join(rows[i] for i in order) + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONHASHSEED": "0"}
    proc = subprocess.run([sys.executable, "-c", _FIT_WORKER, str(train_file), str(out),
                           json.dumps({"train": args, "quantize": {"cutoff": 100_000}})], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return out


def probabilities(path: Path, lines: list[str]) -> np.ndarray:
    import fasttext  # heavy; only the scoring step needs it

    return TrainedDetector(path=path, sha256="", card={}, model=fasttext.load_model(str(path))).raw_probabilities(lines)


def scores(df: pl.DataFrame, probs: np.ndarray) -> dict:
    real = ~df["source"].str.ends_with("/opening").to_numpy()
    truth = (df["label"] != "answered").to_numpy()
    raw = 1 - probs[:, 0]
    ok = (np.interp(raw, *isotonic(raw[real], truth[real])) >= 0.5) == truth
    lang, label = df["language"].to_numpy(), df["label"].to_numpy()
    out = {"all": round(ok[real].mean(), 4)} | {lg: round(ok[real & (lang == lg)].mean(), 4) for lg in ("en", "zh", "fi")}
    out |= {f"right_{c}": round(ok[real & (label == c)].mean(), 4) for c in CLASSES}
    return out | {f"evasive_{lg}": round(ok[real & (label == "official_line") & (lang == lg)].mean(), 3) for lg in ("en", "fi")}


def run(name: str, df: pl.DataFrame, fold_seed: int, workdir: Path) -> dict:
    overrides, (head, tail), kind = RUNS[name]
    prepared = prepare_texts(df["text"], head, tail)
    train_extra, test_extra = extra_tokens(df, prepared, kind)
    train_lines = [f"{p} {e}".strip() for p, e in zip(prepared, train_extra, strict=True)]
    test_lines = [f"{p} {e}".strip() for p, e in zip(prepared, test_extra, strict=True)]
    folds, labels = group_folds(df["model"], 5, fold_seed), df["label"].to_list()
    probs, bare, sizes = np.zeros((df.height, 4)), np.zeros((df.height, 4)), []
    for k in range(5):
        train, test = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        path = fit_lines([train_lines[i] for i in train], [labels[i] for i in train], BASE | overrides, workdir / name / f"fold{k}")
        sizes.append(path.stat().st_size)
        probs[test] = probabilities(path, [test_lines[i] for i in test])
        if kind == "prompt":
            bare[test] = probabilities(path, [prepared[int(i)] for i in test])
    result = {"run": name, "fold_seed": fold_seed, "size_mb": round(max(sizes) / 1e6, 2)} | scores(df, probs)
    return result | ({"without_prompt": scores(df, bare)} if kind == "prompt" else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", choices=sorted(RUNS))
    parser.add_argument("--fold-seed", type=int, default=1)
    args = parser.parse_args()
    df = training_frame()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.runs:
            print(json.dumps(run(name, df, args.fold_seed, Path(tmp))), flush=True)


if __name__ == "__main__":
    main()
