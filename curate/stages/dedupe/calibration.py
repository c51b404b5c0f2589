"""Per-model dedupe thresholds, read from calibration.toml beside this module.

A cosine threshold means nothing without the model that produced the cosine, so each model
carries its own: the model-wide merge `threshold` and band floor `verify_above` (pooled over its
calibrated languages), per-language entries (`[models."<name>".languages.<code>]`, each with its
own threshold, band floor and public source), and the `source` it was chosen on (public data, see
bench/dedupe_calibration.py and docs/dedupe.md). A language without an entry gets the model-wide
values and is reported as not calibrated for that language; a model missing from the table gets
the `[default]` entry and a warning in the report.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

TABLE = Path(__file__).with_name("calibration.toml")


@dataclass(frozen=True)
class Calibration:
    model: str  # the table entry used ("default" when the model has none)
    threshold: float
    verify_above: float
    prompt_name: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)  # per calibrated language
    source: str = ""
    calibrated: bool = True
    verify_floors: dict[str, float] = field(default_factory=dict)  # per calibrated language
    language_sources: dict[str, str] = field(default_factory=dict)

    def threshold_for(self, language: str) -> float:
        return self.thresholds.get(language, self.threshold)

    def verify_above_for(self, language: str) -> float:
        return self.verify_floors.get(language, self.verify_above)

    def language_calibrated(self, language: str) -> bool:
        return self.calibrated and language in self.thresholds


@functools.lru_cache(maxsize=4)
def load_table(path: Path = TABLE) -> dict[str, dict]:
    with open(path, "rb") as f:
        table = tomllib.load(f)
    if "default" not in table:
        raise ValueError(f"{path}: no [default] entry")
    return table


def _entry(name: str, entry: dict, calibrated: bool) -> Calibration:
    thresholds = {k: float(v) for k, v in entry.get("thresholds", {}).items()}
    floors, sources = {}, {}
    for lang, value in entry.get("languages", {}).items():
        thresholds[lang] = float(value["threshold"])
        floors[lang] = float(value.get("verify_above", entry["verify_above"]))
        sources[lang] = value.get("source", entry.get("source", ""))
    return Calibration(
        model=name, threshold=float(entry["threshold"]), verify_above=float(entry["verify_above"]),
        prompt_name=entry.get("prompt_name"), thresholds=thresholds, source=entry.get("source", ""),
        calibrated=calibrated, verify_floors=floors, language_sources=sources,
    )


def calibration_for(model_name: str) -> Calibration:
    """The table entry of `model_name` (a hub name such as google/embeddinggemma-300m), else [default]."""
    table = load_table()
    models = table.get("models", {})
    if model_name in models:
        return _entry(model_name, models[model_name], True)
    return _entry("default", table["default"], False)


def calibration_fingerprint(model_name: str) -> str:
    """Short hash of the entry a model gets, for the stage version."""
    cal = calibration_for(model_name)
    blob = json.dumps([cal.model, cal.threshold, cal.verify_above, cal.prompt_name, sorted(cal.thresholds.items()),
                       sorted(cal.verify_floors.items())])
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class LanguageSetting:
    """What dedupe applies to one language: reported per language in the stage report."""

    model: str
    threshold: float
    verify_above: float | None
    source: str
    # True: this language has its own calibrated threshold; False: it gets the model-wide one (or
    # the configured one, or the uncalibrated default).
    calibrated: bool = False

    def as_report(self) -> dict:
        return {"model": self.model, "threshold": self.threshold, "verify_above": self.verify_above,
                "threshold_source": self.source, "calibrated_for_language": self.calibrated}


def language_settings(
    languages: list[str], model_name: str, *, threshold: float | None, verify: bool, verify_above: float | None,
) -> dict[str, LanguageSetting]:
    """Threshold (and band lower bound when verifying) per language: the configured value when
    given, else the language's calibrated one, else the model's model-wide one."""
    cal = calibration_for(model_name)
    out = {}
    for lang in languages:
        own = threshold is None and cal.language_calibrated(lang)
        if threshold is not None:
            source = "config"
        elif not cal.calibrated:
            source = f"calibration.toml [default]: {model_name} is not calibrated"
        elif own:
            source = f"calibration.toml [{cal.model}] {lang}: {cal.language_sources.get(lang) or cal.source}"
        else:
            source = f"calibration.toml [{cal.model}] model-wide ({lang} not calibrated): {cal.source}"
        t = threshold if threshold is not None else cal.threshold_for(lang)
        lower = (verify_above if verify_above is not None else min(cal.verify_above_for(lang), t)) if verify else None
        out[lang] = LanguageSetting(model_name, round(t, 4), None if lower is None else round(min(lower, t), 4), source,
                                    own)
    return out


__all__ = ["Calibration", "LanguageSetting", "TABLE", "calibration_fingerprint", "calibration_for", "language_settings", "load_table"]
