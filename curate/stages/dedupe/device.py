"""The embedding model as dedupe runs it: device, dtype and the model's calibrated prompt."""

from __future__ import annotations

from typing import Any

from curate.stages.dedupe.calibration import calibration_for
from curate.stages.dedupe.config import DedupeConfig
from curate.stages.dedupe.embed import ResolvedModel, load_model

DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def resolved_dtype(config: DedupeConfig, device: str) -> str:
    """auto: float16 on CUDA (half the memory traffic, same neighbours at dedupe thresholds),
    float32 on CPU (half-precision matmuls are slower there, not faster)."""
    if config.dtype != "auto":
        return config.dtype
    return "float16" if device.startswith("cuda") else "float32"


def prompt_name_for(config: DedupeConfig, resolved: ResolvedModel) -> str | None:
    return config.prompt_name if config.prompt_name is not None else calibration_for(resolved.name).prompt_name


def load_for_config(config: DedupeConfig, resolved: ResolvedModel) -> tuple[Any, str | None]:
    """(sentence-transformers model on its device in the configured dtype, prompt name)."""
    import torch  # heavy; only workers that embed need it

    model = load_model(str(resolved.path), config.device, config.backend, config.max_seq_length)
    if config.backend == "torch":
        dtype = getattr(torch, resolved_dtype(config, str(model.device)))
        if next(model.parameters()).dtype != dtype:
            model.to(dtype)
    return model, prompt_name_for(config, resolved)


__all__ = ["load_for_config", "prompt_name_for", "resolved_dtype"]
