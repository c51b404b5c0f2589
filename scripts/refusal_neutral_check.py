"""docs/refusal-experiments.md, third round: how the (not shipped) embedding head and stack score the hand-written
neutral answers of tests/test_refusal_neutral.py. A check only: nothing is trained, tuned or
thresholded on these texts.

    nice -n 10 uv run python scripts/refusal_neutral_check.py   # needs the cache and probabilities
                                                                 # of the third-round runs (fold seed 1)

The head and stacker are fit on every embedded SpeechMap reply (scripts/refusal_embed_cache.py);
their scores go through the isotonic maps of their seed-1 out-of-fold scores; "model" is the
shipped fastText detector.
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from refusal_embed_cache import PROMPT_NAME, load_embedder, window_texts  # noqa: E402
from refusal_experiments import BAND, CLASSES, _fit_head, _logreg, _probs, embedded_subset, training_frame, weighted_isotonic  # noqa: E402
from test_refusal_neutral import NEUTRAL_EN, NEUTRAL_ZH, OFFICIAL_LINE  # noqa: E402

from curate.refusal.model import load_detector, prepare_texts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-cache", type=Path, default=Path("/work/cache/refusal4"))
    parser.add_argument("--probs", type=Path, default=Path("/work/cache/refusal4/probs"), help="--save-probs folder of the runs")
    parser.add_argument("--views", action="store_true", help="the runs trained on opening views too (--views)")
    args = parser.parse_args()
    df = training_frame()
    sub = embedded_subset(df, args.embed_cache, views=args.views)
    rows, w = sub["rows"], sub["weight"]
    y = np.array([CLASSES.index(label) for label in df["label"].gather(rows)])
    e0 = np.load(args.probs / "e0-seed1.npy")[rows]
    head, inner = _fit_head(sub["reply"], y, w, df["model"].gather(rows).to_numpy())
    stacker = _logreg(np.log(np.clip(np.hstack([e0, inner]), 1e-6, 1)), y, w, 1.0)
    truth, real = y != 0, ~sub["train_only"]
    tag = "-views" if args.views else ""
    maps = {run: weighted_isotonic(1 - np.load(args.probs / f"{run}{tag}-seed1.npy")[real, 0], truth[real], w[real]) for run in ("head", "stack")}
    model, _ = load_embedder()
    texts = NEUTRAL_EN + NEUTRAL_ZH + OFFICIAL_LINE
    emb = model.encode(window_texts(texts, model.tokenizer), prompt_name=PROMPT_NAME, normalize_embeddings=True)
    detector = load_detector()
    fast = detector.raw_probabilities(prepare_texts(pl.Series(texts), detector.head_chars, detector.tail_chars).to_list())
    p_head = _probs(head, emb)
    p_stack = _probs(stacker, np.log(np.clip(np.hstack([fast, p_head]), 1e-6, 1)))
    kinds = ["neutral en"] * len(NEUTRAL_EN) + ["neutral zh"] * len(NEUTRAL_ZH) + ["official line"] * len(OFFICIAL_LINE)
    for kind, text, a, b, c in zip(kinds, texts, detector.calibrate(1 - fast[:, 0]), np.interp(1 - p_head[:, 0], *maps["head"]),
                                   np.interp(1 - p_stack[:, 0], *maps["stack"]), strict=True):
        cascade = c if BAND[0] <= a <= BAND[1] else a
        print(f"{kind:13} {text[:30]!r:34} model {a:.2f}  head {b:.2f}  stack {c:.2f}  model+embed {cascade:.2f}")


if __name__ == "__main__":
    main()
