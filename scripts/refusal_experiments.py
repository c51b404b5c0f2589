"""Reproduce docs/refusal-experiments.md (second to sixth rounds): by-model cross-validation
of refusal-detector variants (fastText settings, rule hits / position / prompt tokens, window; an
EmbeddingGemma head, stacked with fastText, request-reply features, the model+embed cascade).

    nice -n 10 uv run python scripts/refusal_experiments.py e0 sub36 wng3 rules prompt [--fold-seed 11]
    nice -n 10 uv run python scripts/refusal_experiments.py e0 --save-probs P
    nice -n 10 uv run python scripts/refusal_experiments.py e0_sub head stack pair pair_stack cascade \
        --embed-cache DIR --e0-probs P/e0-seed1.npy    # DIR filled by scripts/refusal_embed_cache.py
    # fourth round: --group question (whole questions held out; e0 --group question first) and
    # --views (the heads also train on the cached SpeechMap opening views; never scored)
    # fifth round: views50 / noviews (share of the opening views that trains), md (Markdown markup
    # stripped); --compare BASE RUN (paired bootstrap of a run's gain over e0 from --save-probs files,
    # all real replies, and per model); RUN --neutral P (fit on every row, score the neutral answers)
    nice -n 10 uv run python scripts/refusal_experiments.py --compare P/e0-seed1.npy P/md-seed1.npy
    nice -n 10 uv run python scripts/refusal_experiments.py e0 noviews --neutral P
    # sixth round: us / md_us (+ SpeechMap's us_criticism set, source speechmap_us, and its opening
    # views); every run scores those rows too, but only these two train on them. Accuracy figures
    # ("all", "en", ...) are on the previous rounds' real replies; "new_*" on the new set.

The embedding runs are described where they are defined (third round, below).

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
from curate.refusal.data import (DATA_DIR, REFUSAL_EVAL_FILE, SPEECHMAP_US_FILE, TRAIN_SOURCES, XSTEST_DIR,
                                 check_training_frame, load_sources)
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
    # fifth round: how many opening views train (they teach "short is not refusal"; all of them in e0)
    "views50": ({}, (1000, 300), "views:0.5"),
    "noviews": ({}, (1000, 300), "views:0"),
    "md": ({}, (1000, 300), "markup"),
    # sixth round: + SpeechMap us_criticism (same 31 models, new topic), with and without markup
    "us": ({}, (1000, 300), "new"),
    "md_us": ({}, (1000, 300), "markup+new"),
}
NEW_SOURCE = "speechmap_us"  # rows only the sixth round's runs train on (they are scored in every run)
# Markdown markup (emphasis, headings, table pipes, code ticks, quotes) and rules of two or more
# dashes or equals signs: tokens that say nothing about refusing, and a table fills the window with them.
MARKUP = r"[*#|`>~_]+|[-=]{2,}"


def training_frame() -> pl.DataFrame:
    """The shipped training rows, cut to the final answer, with each row's request (`prompt`)."""
    df = check_training_frame(load_sources((*TRAIN_SOURCES, NEW_SOURCE))[0], "training data")
    df = df.with_columns(final_answers(df["text"]).alias("text")).filter(pl.col("text").str.strip_chars().str.len_chars() > 0)
    prompts = {}
    for source, path in (("speechmap", DATA_DIR / "speechmap_compliance.jsonl.gz"), (NEW_SOURCE, SPEECHMAP_US_FILE)):
        for line in gzip.decompress(path.read_bytes()).decode().splitlines():
            r = json.loads(line)
            prompts[(source, r["question_id"], r["language"])] = r["prompt"]
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
    if kind is None or kind.startswith("views:") or kind in ("markup", "new", "markup+new"):
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


def model_inputs(texts: pl.Series, kind: str | None, head: int, tail: int) -> pl.Series:
    """The window the model reads; the markup run strips Markdown markup first."""
    if kind in ("markup", "markup+new"):
        texts = texts.str.replace_all(MARKUP, " ")
    return prepare_texts(texts, head, tail)


def training_rows(df: pl.DataFrame, kind: str | None) -> np.ndarray:
    """Which rows may train: all but the sixth round's new source (and its views), which only its
    runs train on; for a `views:<share>` run a seeded share of the opening views (the views are never
    scored either way)."""
    new = df["source"].str.starts_with(NEW_SOURCE).to_numpy()
    if kind in ("new", "markup+new"):
        return np.ones(df.height, bool)
    if kind is None or not kind.startswith("views:"):
        return ~new
    view = df["source"].str.ends_with("/opening").to_numpy()
    return ~new & (~view | (np.random.default_rng(5).random(df.height) < float(kind.split(":")[1])))


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


def scored_rows(df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the real replies scored: the previous rounds' set (the comparison) and the new source."""
    real = ~df["source"].str.ends_with("/opening").to_numpy()
    new = (df["source"] == NEW_SOURCE).to_numpy()
    return real & ~new, new


def scores(df: pl.DataFrame, probs: np.ndarray) -> dict:
    """Accuracy through one isotonic map fit on the previous rounds' real replies; the new set's
    figures (`new_*`) through the same map."""
    real, new = scored_rows(df)
    truth = (df["label"] != "answered").to_numpy()
    raw = 1 - probs[:, 0]
    ok = (np.interp(raw, *isotonic(raw[real], truth[real])) >= 0.5) == truth
    lang, label = df["language"].to_numpy(), df["label"].to_numpy()
    out = {"all": round(ok[real].mean(), 4)} | {lg: round(ok[real & (lang == lg)].mean(), 4) for lg in ("en", "zh", "fi")}
    out |= {f"right_{c}": round(ok[real & (label == c)].mean(), 4) for c in CLASSES}
    out |= {f"evasive_{lg}": round(ok[real & (label == "official_line") & (lang == lg)].mean(), 3) for lg in ("en", "fi")}
    if new.any():
        out |= {"new_n": int(new.sum()), "new_all": round(ok[new].mean(), 4)}
        out |= {f"new_right_{c}": round(ok[new & (label == c)].mean(), 4) for c in CLASSES if (new & (label == c)).any()}
    return out


def fold_groups(df: pl.DataFrame, group: str) -> pl.Series:
    """What a fold holds out whole: models, or questions (a question's opening views go with it)."""
    if group == "model":
        return df["model"]
    return df["source"].str.replace("/opening", "", literal=True) + "/" + df["question_id"]


def run(name: str, df: pl.DataFrame, fold_seed: int, workdir: Path, group: str = "model") -> dict:
    overrides, (head, tail), kind = RUNS[name]
    prepared = model_inputs(df["text"], kind, head, tail)
    train_extra, test_extra = extra_tokens(df, prepared, kind)
    train_lines = [f"{p} {e}".strip() for p, e in zip(prepared, train_extra, strict=True)]
    test_lines = [f"{p} {e}".strip() for p, e in zip(prepared, test_extra, strict=True)]
    folds, labels = group_folds(fold_groups(df, group), 5, fold_seed), df["label"].to_list()
    probs, bare, sizes = np.zeros((df.height, 4)), np.zeros((df.height, 4)), []
    trains = training_rows(df, kind)
    for k in range(5):
        train, test = np.flatnonzero((folds != k) & trains), np.flatnonzero(folds == k)
        path = fit_lines([train_lines[i] for i in train], [labels[i] for i in train], BASE | overrides, workdir / name / f"fold{k}")
        sizes.append(path.stat().st_size)
        probs[test] = probabilities(path, [test_lines[i] for i in test])
        if kind == "prompt":
            bare[test] = probabilities(path, [prepared[int(i)] for i in test])
    result = {"run": name, "group": group, "fold_seed": fold_seed, "size_mb": round(max(sizes) / 1e6, 2)} | scores(df, probs)
    return result | ({"without_prompt": scores(df, bare)} if kind == "prompt" else {}), probs


# ---- third round: an embedding head on EmbeddingGemma-300M, and request-reply features ----------
# Only the real SpeechMap replies found in the embedding cache (scripts/refusal_embed_cache.py) are
# scored; each (language, label) stratum is weighted by its full count over its embedded count, so
# the figures estimate the whole SpeechMap set. Folds are the same model-grouped folds as above.
EMBED_RUNS = ("e0_sub", "head", "stack", "pair", "pair_stack", "cascade")
BAND = (0.15, 0.85)  # the detector cascade's uncertain band ([stages.refusal] uncertain_low / _high)


def weighted_isotonic(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted pool-adjacent-violators fit of y on x (knots for np.interp), as train.isotonic."""
    order = np.lexsort((y, x))
    blocks: list[list[float]] = []  # [sum_wx, sum_wy, sum_w]
    for xi, yi, wi in zip(x[order], y[order].astype(float), w[order], strict=True):
        blocks.append([wi * xi, wi * yi, wi])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            sx, sy, sw = blocks.pop()
            blocks[-1][0] += sx
            blocks[-1][1] += sy
            blocks[-1][2] += sw
    kx = [b[0] / b[2] for b in blocks]
    ky = [b[1] / b[2] for b in blocks]
    return np.array([0.0, *kx, 1.0]), np.array([ky[0], *ky, ky[-1]])


def embedded_subset(df: pl.DataFrame, cache_dir: Path, views: bool = False) -> dict:
    """Rows of real SpeechMap replies with cached reply and request embeddings, and their weights.

    With `views`, also the SpeechMap opening views found in the cache (`--views` of
    scripts/refusal_embed_cache.py): training rows only (`train_only`), never scored, weight 1.
    """
    from refusal_embed_cache import PROMPT_NAME, load_tokenizer, window_texts
    from curate.stages.dedupe.cache import EmbeddingCache
    from curate.stages.dedupe.embed import text_keys

    tokenizer, key = load_tokenizer()
    cache = EmbeddingCache(cache_dir, key)
    rows = np.flatnonzero((df["source"] == "speechmap").to_numpy())
    texts = window_texts(df["text"].gather(rows).to_list(), tokenizer)
    found, reply = cache.lookup(text_keys(texts, key, PROMPT_NAME))
    rows = rows[found]
    strata = pl.DataFrame({"language": df["language"], "label": df["label"]})
    full = strata.gather(np.flatnonzero((df["source"] == "speechmap").to_numpy())).group_by("language", "label").len("n_full")
    sub = strata.gather(rows).with_row_index("i")
    counts = sub.group_by("language", "label").len("n_sub").join(full, on=["language", "label"])
    weight = sub.join(counts, on=["language", "label"]).sort("i").select(pl.col("n_full") / pl.col("n_sub")).to_series().to_numpy()
    train_only = np.zeros(len(rows), bool)
    if views:
        view_rows = np.flatnonzero((df["source"] == "speechmap/opening").to_numpy())
        ok, view_emb = cache.lookup(text_keys(window_texts(df["text"].gather(view_rows).to_list(), tokenizer), key, PROMPT_NAME))
        if ok.any():
            rows, reply = np.concatenate([rows, view_rows[ok]]), np.vstack([reply, view_emb])
            weight, train_only = np.concatenate([weight, np.ones(ok.sum())]), np.concatenate([train_only, np.ones(ok.sum(), bool)])
    asked = df["prompt"].gather(rows).to_list()
    ok, request = cache.lookup(text_keys(asked, key, PROMPT_NAME))
    if not ok.all():
        raise SystemExit(f"{(~ok).sum()} requests are not in the embedding cache {cache_dir}")
    return {"rows": rows, "reply": reply, "request": request, "weight": weight, "train_only": train_only,
            "strata": counts.sort("language", "label").to_dicts() + [{"views": int(train_only.sum())}]}


def scored_part(sub: dict, probs: np.ndarray) -> tuple[dict, np.ndarray]:
    """The rows that are scored (real replies, not opening views) and their probabilities."""
    keep = ~sub["train_only"]
    return {k: (v[keep] if isinstance(v, np.ndarray) and len(v) == len(keep) else v) for k, v in sub.items()}, probs[keep]


def _logreg(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression  # heavy; only the embedding runs need it

    return LogisticRegression(C=c, max_iter=2000).fit(x, y, sample_weight=w / w.mean())


HEAD_C = 10.0  # fixed beforehand (unit-norm 768-d inputs): no search on any held-out fold


def _fit_head(x: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray):
    """The head on these rows, and its inner out-of-fold probabilities (3 folds of these rows only,
    grouped as the outer folds), which train a stacker without leaking the held-out fold."""
    inner = group_folds(pl.Series(groups), 3, 5)
    oof = np.zeros((len(y), len(CLASSES)))
    for k in range(3):
        tr, te = inner != k, inner == k
        oof[te] = _probs(_logreg(x[tr], y[tr], w[tr], HEAD_C), x[te])
    return _logreg(x, y, w, HEAD_C), oof


def _probs(model, x: np.ndarray) -> np.ndarray:
    out = np.zeros((len(x), len(CLASSES)))
    out[:, model.classes_] = model.predict_proba(x)
    return out


def embed_features(sub: dict, kind: str) -> np.ndarray:
    reply, request = sub["reply"], sub["request"]
    if kind == "reply":
        return reply
    cos = np.sum(reply * request, axis=1, keepdims=True)
    return np.hstack([reply, request, reply * request, cos])


def embed_runs(names: list[str], df: pl.DataFrame, sub: dict, e0: np.ndarray, fold_seed: int,
               group: str = "model") -> dict[str, np.ndarray]:
    """Out-of-fold P(class) for the embedded rows under each run of `names` (opening views, where
    present, only ever train)."""
    rows, w = sub["rows"], sub["weight"]
    y = np.array([CLASSES.index(lab) for lab in df["label"].gather(rows)])
    groups = fold_groups(df, group).gather(rows).to_numpy()
    folds = group_folds(fold_groups(df, group), 5, fold_seed)[rows]
    out = {name: np.zeros((len(rows), len(CLASSES))) for name in (*names, *(["stack"] if "cascade" in names else []))}
    if "e0_sub" in out:
        out["e0_sub"] = e0[rows]
    for kind, head_run, stack_run in (("reply", "head", "stack"), ("pair", "pair", "pair_stack")):
        if head_run not in out and stack_run not in out and not (kind == "reply" and "cascade" in out):
            continue
        x = embed_features(sub, kind)
        for k in range(5):
            tr, te = folds != k, folds == k
            head, inner_oof = _fit_head(x[tr], y[tr], w[tr], groups[tr])
            test_probs = _probs(head, x[te])
            if head_run in out:
                out[head_run][te] = test_probs
            if stack_run in out or (kind == "reply" and "cascade" in out):
                # Stacker inputs: log-probabilities of fastText e0 (its out-of-fold scores) and of
                # the head (inner out-of-fold on the training rows); fitted on the training folds only.
                z_tr = np.log(np.clip(np.hstack([e0[rows][tr], inner_oof]), 1e-6, 1))
                z_te = np.log(np.clip(np.hstack([e0[rows][te], test_probs]), 1e-6, 1))
                out[stack_run][te] = _probs(_logreg(z_tr, y[tr], w[tr], 1.0), z_te)
    if "cascade" in out:
        # model+embed: e0's calibrated score, replaced by the stack's where e0 is in the uncertain
        # band; both maps fit on the scored rows (real replies) only.
        truth = (df["label"].gather(rows) != "answered").to_numpy()
        real = ~sub["train_only"]
        e0_raw, stack_raw = 1 - e0[rows][:, 0], 1 - out["stack"][:, 0]
        first = np.interp(e0_raw, *weighted_isotonic(e0_raw[real], truth[real], w[real]))
        second = np.interp(stack_raw, *weighted_isotonic(stack_raw[real], truth[real], w[real]))
        band = (first >= BAND[0]) & (first <= BAND[1])
        score = np.where(band, second, first)
        out["cascade"] = np.column_stack([1 - score, score, np.zeros((len(rows), 2))])
        sub["band_share"] = round(float(np.sum(w[band & real]) / np.sum(w[real])), 4)
    return out


def weighted_scores(df: pl.DataFrame, sub: dict, probs: np.ndarray, boot: int = 0, base: np.ndarray | None = None,
                    group: str = "model") -> dict:
    rows, w = sub["rows"], sub["weight"]
    truth = (df["label"].gather(rows) != "answered").to_numpy()
    raw = 1 - probs[:, 0]
    ok = (np.interp(raw, *weighted_isotonic(raw, truth, w)) >= 0.5) == truth
    lang, label = df["language"].gather(rows).to_numpy(), df["label"].gather(rows).to_numpy()

    def acc(mask: np.ndarray) -> float:
        return round(float(np.sum(w[mask] * ok[mask]) / np.sum(w[mask])), 4)

    out = {"n": len(rows), "all": acc(np.ones(len(rows), bool))} | {lg: acc(lang == lg) for lg in ("en", "zh", "fi")}
    out |= {f"right_{c}": acc(label == c) for c in CLASSES if (label == c).any()}
    out |= {f"evasive_{lg}": acc((label == "official_line") & (lang == lg)) for lg in ("en", "zh", "fi")}
    if boot and base is not None:
        # Paired bootstrap over the fold groups (whole models, or whole questions, resampled):
        # spread of the gain over e0.
        base_ok = (np.interp(1 - base[:, 0], *weighted_isotonic(1 - base[:, 0], truth, w)) >= 0.5) == truth
        models = fold_groups(df, group).gather(rows).to_numpy()
        names = np.unique(models)
        member = {m: np.flatnonzero(models == m) for m in names}
        rng = np.random.default_rng(0)
        gains = {"all": [], "en": [], "zh": [], "fi": []}
        for _ in range(boot):
            idx = np.concatenate([member[m] for m in rng.choice(names, len(names))])
            for key in gains:
                sel = idx if key == "all" else idx[lang[idx] == key]
                gains[key].append(np.sum(w[sel] * (ok[sel].astype(float) - base_ok[sel])) / np.sum(w[sel]))
        out |= {f"gain_{k}_95": [round(float(np.percentile(v, 2.5)), 4), round(float(np.percentile(v, 97.5)), 4)]
                for k, v in gains.items()}
    return out


def compare(df: pl.DataFrame, base_file: Path, run_file: Path, group: str, boot: int) -> None:
    """Fifth round: a fastText run against e0 on the same folds, all real replies (XSTest and
    refusal_eval too), with the paired bootstrap over the fold groups; and per model."""
    rows = np.flatnonzero(scored_rows(df)[0])
    sub = {"rows": rows, "weight": np.ones(len(rows))}
    base, run_probs = np.load(base_file)[rows], np.load(run_file)[rows]
    print(json.dumps({"run": run_file.stem, "base": base_file.stem, "group": group}
                     | weighted_scores(df, sub, run_probs, boot, base, group)), flush=True)
    truth = (df["label"].gather(rows) != "answered").to_numpy()
    models = df["model"].gather(rows).to_numpy()
    for name, probs in (("base", base), ("run", run_probs)):
        raw = 1 - probs[:, 0]
        ok = (np.interp(raw, *isotonic(raw, truth)) >= 0.5) == truth
        print(json.dumps({name: {m: round(float(ok[models == m].mean()), 3) for m in sorted(set(models))}}), flush=True)


def neutral_check(name: str, df: pl.DataFrame, oof: np.ndarray) -> None:
    """Fifth round: the run's model fit on every row (as `curate refusal train` would), its score
    through the isotonic map of its own out-of-fold scores, on the hand-written neutral answers and
    official lines. Nothing is fit on those texts."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_refusal_neutral import NEUTRAL_EN, NEUTRAL_ZH, OFFICIAL_LINE

    overrides, (head, tail), kind = RUNS[name]
    trains = training_rows(df, kind)
    prepared = model_inputs(df["text"], kind, head, tail)
    rows = np.flatnonzero(trains)
    with tempfile.TemporaryDirectory() as tmp:
        path = fit_lines([prepared[int(i)] for i in rows], [df["label"][int(i)] for i in rows], BASE | overrides, Path(tmp))
        texts = NEUTRAL_EN + NEUTRAL_ZH + OFFICIAL_LINE
        probs = probabilities(path, model_inputs(pl.Series(texts), kind, head, tail).to_list())
    real = scored_rows(df)[0]
    truth = (df["label"] != "answered").to_numpy()
    score = np.interp(1 - probs[:, 0], *isotonic(1 - oof[real, 0], truth[real]))
    kinds = ["neutral en"] * len(NEUTRAL_EN) + ["neutral zh"] * len(NEUTRAL_ZH) + ["official line"] * len(OFFICIAL_LINE)
    print(json.dumps({"run": name, "neutral": [[k, t[:30], round(float(v), 3)] for k, t, v in zip(kinds, texts, score, strict=True)]},
                     ensure_ascii=False), flush=True)


def probs_name(run_name: str, group: str, fold_seed: int) -> str:
    return f"{run_name}-seed{fold_seed}.npy" if group == "model" else f"{run_name}-{group}-seed{fold_seed}.npy"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help=f"runs, of {sorted(RUNS) + list(EMBED_RUNS)}")
    parser.add_argument("--fold-seed", type=int, default=1)
    parser.add_argument("--group", choices=("model", "question"), default="model", help="what a fold holds out whole")
    parser.add_argument("--embed-cache", type=Path, help="embedding cache of scripts/refusal_embed_cache.py (embedding runs)")
    parser.add_argument("--e0-probs", type=Path, help="e0's out-of-fold probabilities (--save-probs of an e0 run)")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--views", action="store_true", help="also train the heads on the cached SpeechMap opening views")
    parser.add_argument("--save-probs", type=Path, help="folder for each run's out-of-fold probabilities (<run>-seed<k>.npy)")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("BASE", "RUN"),
                        help="no training: paired bootstrap of RUN's gain over BASE (--save-probs files) on every real reply")
    parser.add_argument("--neutral", type=Path, metavar="PROBS",
                        help="no cross-validation: fit each run on every row, calibrate on PROBS/<run>-seed<k>.npy and score the "
                             "neutral answers of tests/test_refusal_neutral.py (a check only)")
    args = parser.parse_args()
    unknown = set(args.runs) - set(RUNS) - set(EMBED_RUNS)
    if unknown or not (args.runs or args.compare):
        parser.error(f"unknown runs {sorted(unknown)}" if unknown else "name a run, or --compare")
    df = training_frame()
    if args.neutral:
        for name in args.runs:
            neutral_check(name, df, np.load(args.neutral / probs_name(name, "model", args.fold_seed)))
        return
    if args.compare:
        compare(df, *args.compare, args.group, args.bootstrap)
        return
    embedding = [r for r in args.runs if r in EMBED_RUNS]
    if embedding:
        sub = embedded_subset(df, args.embed_cache, views=args.views)
        e0 = np.load(args.e0_probs)
        print(json.dumps({"strata": sub["strata"]}), flush=True)
        every = np.flatnonzero((df["source"] == "speechmap").to_numpy())
        whole = weighted_scores(df, {"rows": every, "weight": np.ones(len(every))}, e0[every])
        print(json.dumps({"run": "e0_all_speechmap", "group": args.group, "fold_seed": args.fold_seed} | whole), flush=True)
        _, base = scored_part(sub, e0[sub["rows"]])
        tag = "views" if args.views else None
        for name, probs in embed_runs(embedding, df, sub, e0, args.fold_seed, args.group).items():
            if args.save_probs:
                args.save_probs.mkdir(parents=True, exist_ok=True)
                np.save(args.save_probs / probs_name(f"{name}-{tag}" if tag else name, args.group, args.fold_seed), probs)
            part, probs = scored_part(sub, probs)
            result = weighted_scores(df, part, probs, args.bootstrap if name != "e0_sub" else 0, base, args.group)
            result |= {"band_share": sub["band_share"]} if name == "cascade" else {}
            print(json.dumps({"run": name, "views": args.views, "group": args.group, "fold_seed": args.fold_seed} | result), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in [r for r in args.runs if r in RUNS]:
            result, probs = run(name, df, args.fold_seed, Path(tmp), args.group)
            print(json.dumps(result), flush=True)
            if args.save_probs:
                args.save_probs.mkdir(parents=True, exist_ok=True)
                np.save(args.save_probs / probs_name(name, args.group, args.fold_seed), probs)


if __name__ == "__main__":
    main()
