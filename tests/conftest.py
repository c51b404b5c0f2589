"""Shared test setup. Service fixtures (LLM server, Argilla, Prefect) live in tests/fixtures/*.py,
one module per service, and are loaded here as pytest plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Flows run outside the harness (CLI tests) start Prefect's ephemeral server; its default 20 s
# deadline was missed on a loaded 2-core machine. A deadline, not a wait: it returns when it answers.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
# Dask LocalCluster worker processes connect to their scheduler within this deadline (default 30 s);
# a loaded machine importing the stage code in each worker can miss the default.
os.environ.setdefault("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "180s")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"

# session_services first: the service fixtures import its stop helper, and a plugin module imported
# before pytest registers it cannot have its asserts rewritten.
pytest_plugins = ["tests.fixtures.session_services", *sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if p.stem not in ("__init__", "session_services")
)]


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def deccp_censored() -> Path:
    return DATA / "deccp" / "censored.txt"


@pytest.fixture
def workspace_dir(tmp_path: Path) -> Path:
    return tmp_path / "workspace"


def pytest_sessionstart(session: pytest.Session) -> None:
    # Prefect configures its console log handlers once per process, when `prefect.main` is first
    # imported (`from prefect import flow` and the like), bound to the
    # sys.stderr of that moment. The CLI imports Prefect lazily (inside `curate run`), so without this
    # the first import could happen inside a CliRunner invocation, whose stderr is closed when it
    # returns, and every later Prefect log in the session would fail ("I/O operation on closed file").
    # Importing it here, after tests/fixtures/prefect_server.py has pointed PREFECT_HOME at a temporary
    # folder, binds the handlers to pytest's session-long stream instead.
    import prefect.main  # noqa: F401
