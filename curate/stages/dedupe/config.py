"""Settings of the dedupe stage (`[stages.dedupe]` in curate.toml)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curate.config import EndpointConfig

KeepPolicy = Literal["first", "longest", "best"]


class DedupeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    semantic: bool = Field(default=True, description="False: exact (normalized) dedupe only, no model.")
    model: str = Field(
        default="auto",
        description=(
            "Hub name, local folder, or an alias: 'auto' (the multilingual EmbeddingGemma-300M that "
            "scripts/setup.sh assembles; else the bundled English all-MiniLM-L6-v2 with a warning), "
            "'minilm-bundled' (fast, English only), 'embeddinggemma'."
        ),
    )
    prompt_name: str | None = Field(
        default=None,
        description="sentence-transformers prompt name; default: the model's calibrated one (EmbeddingGemma: 'query').",
    )
    semantic_languages: list[str] | None = Field(
        default=None,
        description=(
            "Languages that get semantic dedupe (others: exact only). Default: the model's languages "
            "(English for the English-only all-MiniLM models, every language otherwise). Rows with an "
            "unknown language ('und', or no language column) always do."
        ),
    )
    threshold: float | None = Field(
        default=None, gt=0, le=1,
        description="Cosine similarity at or above which rows merge; default: the model's calibrated "
        "threshold per language (curate/dedupe/calibration.toml).",
    )
    verify: bool = Field(
        default=False,
        description="Send pairs between verify_above and the threshold to the LLM judge ([llm] endpoint).",
    )
    verify_above: float | None = Field(
        default=None, gt=0, le=1, description="Lower bound of the verification band; default: the model's calibrated one.",
    )
    verify_max_pairs: int = Field(default=100_000, ge=0, description="Most band pairs sent to the verifier per run.")
    verifier: EndpointConfig | None = Field(
        default=None, description="Endpoint of the band's LLM judge; default: [llm] (filled in when verify is on).",
    )
    near_margin: float = Field(default=0.05, ge=0, lt=1, description="Report pairs within this distance of the threshold.")
    report_pairs: int = Field(default=50, ge=0, description="Most example pairs in pairs_near_threshold.")
    keep: KeepPolicy = Field(default="first", description="Which row of a cluster is kept: first, longest, best.")
    score_col: str | None = Field(default=None, description="Column ranked (higher is better) by keep='best'.")
    cross_language: bool = Field(default=False, description="Also match rows of different languages.")
    k_neighbors: int = Field(default=10, ge=1, description="Neighbours looked at per row (bounds memory and output).")
    batch_size: int = Field(default=64, ge=1)
    device: str | None = Field(default=None, description="torch device (cpu, cuda); default: sentence-transformers' choice.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="Model weights on the device; auto: float16 on CUDA, float32 on CPU.",
    )
    embed_chunk_rows: int = Field(
        default=20_000, ge=100, description="Rows per embedding task when a language fans out over workers.",
    )
    backend: Literal["torch", "onnx", "openvino"] = "torch"
    max_seq_length: int | None = Field(default=None, ge=8, description="Truncate texts to this many tokens.")
    split_above_rows: int = Field(
        default=20_000, ge=100,
        description="Partitions above this size are split by k-means (SemDeDup) before exact search.",
    )
    kmeans_probe: int = Field(default=2, ge=1, le=8, description="Nearest k-means cells each row is compared in.")
    search_jobs_per_partition: int = Field(
        default=8, ge=1, description="Search tasks a split partition fans out into (when fanned out).",
    )
    seed: int = 0

    @model_validator(mode="after")
    def _best_needs_score(self) -> DedupeConfig:
        if self.keep == "best" and not self.score_col:
            raise ValueError("keep='best' needs score_col (the column to rank by)")
        return self
