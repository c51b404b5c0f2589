"""Inter-annotator agreement per campaign and question: percent agreement and Krippendorff's alpha.

Only submitted responses count, and only candidates rated by two or more annotators. Percent
agreement is the share of agreeing annotator pairs, averaged over candidates. Alpha is undefined
(null) when every rating is the same value or fewer than two candidates are shared.
"""

from __future__ import annotations

import itertools

import krippendorff
import numpy as np
import polars as pl

# question -> (level of measurement, value domain after encoding)
AGREEMENT_QUESTIONS: dict[str, tuple[str, list[float]]] = {
    "accept": ("nominal", [0.0, 1.0]),
    "harmful": ("nominal", [0.0, 1.0]),
    "satisfaction": ("ordinal", [0.0, 1.0, 2.0, 3.0, 4.0]),
}

AGREEMENT_SCHEMA = {
    "campaign": pl.String,
    "question": pl.String,
    "level": pl.String,
    "n_items": pl.Int64,
    "n_annotators": pl.Int64,
    "n_ratings": pl.Int64,
    "percent_agreement": pl.Float64,
    "krippendorff_alpha": pl.Float64,
}


def _percent_agreement(matrix: np.ndarray) -> float | None:
    """Mean over items (columns) of the share of annotator pairs that gave the same value."""
    shares = []
    for column in matrix.T:
        values = column[~np.isnan(column)]
        pairs = list(itertools.combinations(values, 2))
        if pairs:
            shares.append(sum(a == b for a, b in pairs) / len(pairs))
    return float(np.mean(shares)) if shares else None


def _alpha(matrix: np.ndarray, level: str, domain: list[float]) -> float | None:
    observed = matrix[~np.isnan(matrix)]
    if matrix.shape[1] < 2 or np.unique(observed).size < 2:
        return None
    value = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level, value_domain=domain)
    return None if np.isnan(value) else float(value)


def agreement_table(reviews: pl.DataFrame) -> pl.DataFrame:
    """One row per (campaign, question) in AGREEMENT_QUESTIONS that the reviews answer."""
    rows = []
    submitted = reviews.filter(pl.col("status") == "submitted")
    for campaign in sorted(submitted["campaign"].unique().to_list()):
        in_campaign = submitted.filter(pl.col("campaign") == campaign)
        for question, (level, domain) in AGREEMENT_QUESTIONS.items():
            ratings = (
                in_campaign.select("candidate_id", "annotator", value=pl.col(question).cast(pl.Float64))
                .drop_nulls("value")
                .unique(["candidate_id", "annotator"], keep="last")
            )
            shared = ratings.group_by("candidate_id").len().filter(pl.col("len") >= 2)["candidate_id"]
            ratings = ratings.filter(pl.col("candidate_id").is_in(shared.implode()))
            if ratings.is_empty():
                matrix = np.empty((0, 0))
            else:
                wide = ratings.pivot(on="candidate_id", index="annotator", values="value").sort("annotator")
                matrix = wide.drop("annotator").to_numpy().astype(float)
            rows.append({
                "campaign": campaign,
                "question": question,
                "level": level,
                "n_items": matrix.shape[1],
                "n_annotators": matrix.shape[0],
                "n_ratings": int((~np.isnan(matrix)).sum()),
                "percent_agreement": _percent_agreement(matrix) if matrix.size else None,
                "krippendorff_alpha": _alpha(matrix, level, domain) if matrix.size else None,
            })
    return pl.DataFrame(rows, schema=AGREEMENT_SCHEMA)
