"""docs/refusal-experiments.md, fifth round: sort the refusals a detector missed, held out by model, into the
categories of the "Where the errors are" table.

    nice -n 10 uv run curate refusal train --out D --held-out by-model.parquet
    nice -n 10 uv run python scripts/refusal_misses.py by-model.parquet [--write misses.parquet]

Each missed refusal (gold refusal, `pred_refused` false; real replies only, opening views are never
scored) goes to the first category it fits: XSTest / refusal_eval rows, a reasoning section (thinking
format), an English or Finnish final answer with 20+ Han characters (language drift), a final answer
under 600 characters (short), else long. Separately: how many misses longer than the model's window
have a `hard` or `deflection` rule phrase only in the unread middle. Reading the misses is by hand.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from curate.refusal.reasoning import final_answers
from curate.refusal.rules import load_rules

HEAD, TAIL = 1000, 300  # the shipped model's window (card: window)
THINKING = r"◁think▷|◁/think▷|<think>|</think>"


def categorised_misses(held_out: pl.DataFrame) -> pl.DataFrame:
    real = held_out.filter(~pl.col("source").str.ends_with("/opening"))
    miss = real.filter(pl.col("gold_refused") & ~pl.col("pred_refused"))
    miss = miss.with_columns(final_answers(miss["text"]).fill_null("").alias("answer"))
    miss = miss.with_columns(n=pl.col("answer").str.len_chars(), han=pl.col("answer").str.count_matches(r"\p{Han}"))
    category = (pl.when(pl.col("source") != "speechmap").then(pl.lit("XSTest / refusal_eval"))
                .when(pl.col("text").str.contains(THINKING)).then(pl.lit("thinking format"))
                .when((pl.col("language") != "zh") & (pl.col("han") >= 20)).then(pl.lit("language drift"))
                .when(pl.col("n") < 600).then(pl.lit("short reply"))
                .otherwise(pl.lit("long reply")))
    rules = load_rules()  # per group, every language, already prefixed "(?i)"
    patterns = [*rules["hard"], *rules["deflection"]]
    middle = pl.when(pl.col("n") > HEAD + TAIL).then(pl.col("answer").str.slice(HEAD, pl.col("n") - HEAD - TAIL)).otherwise(pl.lit(""))
    return miss.with_columns(category.alias("category"), middle.alias("middle")).with_columns(
        pl.any_horizontal([pl.col("middle").str.contains(p) for p in patterns]).alias("phrase_in_middle"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("held_out", type=Path, help="--held-out Parquet of `curate refusal train`")
    parser.add_argument("--write", type=Path, help="also write the categorised misses (for reading)")
    args = parser.parse_args()
    miss = categorised_misses(pl.read_parquet(args.held_out))
    pl.Config.set_tbl_rows(100)
    pl.Config.set_tbl_width_chars(200)
    print(miss.group_by("category").len().sort("category"))
    print(miss.group_by("model", "category").len().pivot(on="category", index="model", values="len").sort("model"))
    print(miss.filter(pl.col("source") == "speechmap").group_by("category", "language").len()
          .pivot(on="language", index="category", values="len").sort("category"))
    longer = miss.filter(pl.col("n") > HEAD + TAIL)
    print(f"{longer['phrase_in_middle'].sum()} of {longer.height} misses longer than the window have a hard/deflection "
          "phrase only in the unread middle")
    if args.write:
        miss.drop("middle").write_parquet(args.write)


if __name__ == "__main__":
    main()
