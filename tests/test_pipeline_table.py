"""The stage table: declarations that agree with the pipeline, one runner, and wiring nowhere else.

The small `shout` stage here is the example docs/architecture.md shows for "how to add a stage";
it lives in the tests, not in the product.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict

from curate.config import Config, load_config
from curate.pipeline import CURATION, STAGES, STEPS, stage
from curate.runner import Services, file_hashes, run_call, run_pipeline, stage_settings
from curate.stages.declaration import Stage, reads
from curate.tables import TableRef
from curate.workspace import Workspace

REPO = Path(__file__).resolve().parent.parent

# -- the example stage (docs/architecture.md) -----------------------------------------------------------
LINES = TableRef("lines", "lines")
SHOUTED = TableRef("shout", "lines")


class LinesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


def read_lines(sources: list[Path], config: LinesConfig) -> dict[str, pl.DataFrame]:
    return {"lines": pl.DataFrame({"text": [line for p in sources for line in p.read_text().splitlines() if line]})}


LINES_STAGE = Stage(name="lines", run=read_lines, config=LinesConfig, summary="Read lines.", writes=(LINES,),
                    external=("sources",))


class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suffix_file: str  # a file whose contents shape the output: declared in depends_on


def shout(lines: pl.DataFrame, config: ShoutConfig) -> dict[str, pl.DataFrame]:
    suffix = Path(config.suffix_file).read_text(encoding="utf-8").strip()
    return {"lines": lines.with_columns(pl.col("text").str.to_uppercase() + suffix)}


SHOUT = Stage(
    name="shout", run=shout, config=ShoutConfig, summary="Upper-case every line and add a suffix.",
    reads={"lines": reads(LINES)}, writes=(SHOUTED,), depends_on=lambda config: [config.suffix_file],
)


def test_an_added_stage_runs_skips_and_reruns_when_its_declared_file_changes(tmp_path):
    source, suffix = tmp_path / "in.txt", tmp_path / "suffix.txt"
    source.write_text("a\nb\n", encoding="utf-8")
    suffix.write_text("!", encoding="utf-8")
    cfg = Config.model_validate({"workspace": str(tmp_path / "ws"), "stages": {"shout": {"suffix_file": str(suffix)}}})
    ws = Workspace(cfg.workspace_path)

    def run() -> dict[str, bool]:
        with ws.locked(), Services(ws, cfg) as services:
            results = run_pipeline(cfg, ws, services, lambda call: run_call(ws, call), sources=[source],
                                   stages=(LINES_STAGE, SHOUT))
            return {r.stage: r.skipped for r in results}

    assert run() == {"lines": False, "shout": False}
    assert ws.read(SHOUTED)["text"].to_list() == ["A!", "B!"]
    assert run() == {"lines": True, "shout": True}
    suffix.write_text("?", encoding="utf-8")
    assert run() == {"lines": True, "shout": False}
    assert ws.read(SHOUTED)["text"].to_list() == ["A?", "B?"]


def test_a_stage_whose_inputs_are_left_out_of_the_run_is_left_out_too(tmp_path, caplog):
    source, suffix = tmp_path / "in.txt", tmp_path / "suffix.txt"
    source.write_text("a\n", encoding="utf-8")
    suffix.write_text("!", encoding="utf-8")
    cfg = Config.model_validate({"workspace": str(tmp_path / "ws"), "stages": {"shout": {"suffix_file": str(suffix)}}})
    ws = Workspace(cfg.workspace_path)
    with ws.locked(), Services(ws, cfg) as services:
        ran = [r.stage for r in run_pipeline(cfg, ws, services, lambda call: run_call(ws, call), sources=[source],
                                             stages=(LINES_STAGE, SHOUT), skip=["lines"])]
    assert ran == [] and "stage shout left out" in caplog.text


# -- the declarations agree with the pipeline ----------------------------------------------------------
def test_every_required_input_is_written_by_an_earlier_stage_and_names_are_unique():
    written: set[TableRef] = set()
    for declared in CURATION:
        for name, wanted in declared.reads.items():
            if not wanted.optional:
                assert set(wanted.refs) & written, f"{declared.name}.{name} reads {wanted.refs}, none written before it"
        assert all(t.stage == declared.name for t in declared.writes)
        written |= set(declared.writes)
    assert len(STAGES) == len(CURATION) and STEPS[: len(CURATION)] == tuple(STAGES)


def test_every_stage_builds_its_settings_from_the_default_config_and_declares_its_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, environ={})
    for declared in CURATION:
        settings = stage_settings(declared, cfg)
        assert isinstance(declared.calls_llm(settings), bool)
        for path in file_hashes(declared, settings):
            assert Path(path).exists(), (declared.name, path)
    assert stage("questions").depends_on  # templates are declared


def test_stage_wiring_lives_only_in_the_declarations_and_the_pipeline_table():
    """No `stage/table` literal and no importlib for internal modules outside the declarations."""
    names = "|".join(sorted({d.name for d in CURATION} | {"review", "release"}))
    literal = re.compile(rf"[\"']({names})/[a-z_]+[\"']")
    allowed = {REPO / "curate" / "tables.py"}
    offenders = []
    for path in sorted((REPO / "curate").rglob("*.py")) + sorted((REPO / "flows").rglob("*.py")):
        if path in allowed:
            continue
        text = path.read_text(encoding="utf-8")
        for lineno, line in enumerate(text.splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("#") or '"""' in stripped:
                continue
            prose = ("help=", "description=", "summary=")  # user-facing text may name a table
            if literal.search(line) and not any(p in line for p in prose):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {stripped}")
            if re.search(r"\bimportlib\.import_module\(", line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {stripped}")
    assert offenders == []


def test_no_module_over_about_four_hundred_lines_among_the_reshaped_ones():
    for rel in ("curate/orchestrate.py", "curate/runner.py", "curate/shards.py", "curate/pipeline.py",
                "curate/validate.py", "curate/workspace.py", *map(str, (REPO / "curate" / "stages").rglob("*.py"))):
        path = REPO / rel
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 420, path
