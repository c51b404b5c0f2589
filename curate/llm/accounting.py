"""Tokens and cost of a stage's LLM calls, for its report."""

from __future__ import annotations

from typing import Any

import polars as pl


def _price_exprs(prices: dict[str, dict[str, float]] | None) -> tuple[pl.Expr, pl.Expr]:
    table = prices or {}
    prompt = {m: p.get("usd_per_1m_prompt_tokens", 0.0) for m, p in table.items()}
    completion = {m: p.get("usd_per_1m_completion_tokens", 0.0) for m, p in table.items()}
    model = pl.col("model")
    return (model.replace_strict(prompt, default=None, return_dtype=pl.Float64),
            model.replace_strict(completion, default=None, return_dtype=pl.Float64))


def usage_summary(results: pl.DataFrame, stage: str, prices: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Requests, statuses, tokens and cost of one stage's results (the frame complete_frame returned).

    Tokens and cost are counted for calls made in this run; rows served from the cache are
    counted apart (`cached_*`), so reruns show what they actually spent.
    """
    # Tolerate frames built by hand or concatenated from several calls: missing columns get defaults.
    defaults = {"model": pl.lit("unknown"), "cached": pl.lit(False), "status": pl.lit("ok"),
                "error": pl.lit(None, pl.String), "prompt_tokens": pl.lit(None, pl.Int64),
                "completion_tokens": pl.lit(None, pl.Int64)}
    missing = [expr.alias(name) for name, expr in defaults.items() if name not in results.columns]
    if missing:
        results = results.with_columns(missing)
    results = results.with_columns(pl.col("cached").fill_null(False), pl.col("model").cast(pl.String).fill_null("unknown"))
    prompt_price, completion_price = _price_exprs(prices)
    df = results.with_columns(
        ((pl.col("prompt_tokens").fill_null(0) * prompt_price + pl.col("completion_tokens").fill_null(0) * completion_price)
         / 1e6).alias("_cost")
    )
    fresh = df.filter(~pl.col("cached"))
    cached = df.filter(pl.col("cached"))
    priced = df.filter(pl.col("_cost").is_not_null()).height == df.height

    def total(frame: pl.DataFrame, col: str) -> int:
        return int(frame[col].fill_null(0).sum()) if frame.height else 0

    errors = df.filter(pl.col("status") != "ok")
    error_kinds = (
        errors.select(pl.col("error").str.extract(r"^([a-z_0-9]+)", 1).fill_null("unknown").alias("kind"))
        .group_by("kind").len().sort("kind")
    )
    return {
        "stage": stage,
        "models": sorted(set(df["model"].drop_nulls().to_list())),
        "requests": df.height,
        "ok": df.height - errors.height,
        "errors": errors.height,
        "error_kinds": {k: int(n) for k, n in error_kinds.iter_rows()},
        "truncated": int(df["truncated"].fill_null(False).sum()) if "truncated" in df.columns else 0,
        "calls_made": fresh.height,
        "cached": cached.height,
        "prompt_tokens": total(fresh, "prompt_tokens"),
        "completion_tokens": total(fresh, "completion_tokens"),
        "cached_prompt_tokens": total(cached, "prompt_tokens"),
        "cached_completion_tokens": total(cached, "completion_tokens"),
        "cost_usd": round(float(fresh["_cost"].fill_null(0).sum()), 6) if priced else None,
        "cost_usd_if_uncached": round(float(df["_cost"].fill_null(0).sum()), 6) if priced else None,
    }
