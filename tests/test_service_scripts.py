"""The service scripts under load: a busy or slow listener is waited for, never mistaken for a free
port, and two starts at once leave one healthy service."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.argilla_stack import second_stack_home

REPO = Path(__file__).resolve().parents[1]
LLM_SCRIPT = REPO / "scripts" / "llm-server.sh"


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port where something accepts connections and never answers (a server too busy to reply)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_llm_start_waits_for_a_listener_that_does_not_answer_and_never_starts_a_second_server(silent_listener, tmp_path):
    env = dict(os.environ, CURATE_HOME=str(tmp_path), LLM_READY_TIMEOUT="1", LLM_PROBE_TIMEOUT="1")
    proc = subprocess.run(["bash", str(LLM_SCRIPT), "start", "--port", str(silent_listener)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert f"listens on 127.0.0.1:{silent_listener} but did not answer /v1/models within 1s" in proc.stderr
    assert "starting" not in proc.stderr and not list((tmp_path / "run").glob("*.pid"))
    status = subprocess.run(["bash", str(LLM_SCRIPT), "status", "--port", str(silent_listener)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert status.returncode == 3 and "not running" in status.stdout


ARGILLA_SCRIPT = REPO / "scripts" / "argilla-stack.sh"


@pytest.mark.slow
@pytest.mark.argilla
@pytest.mark.xdist_group("private-argilla-stacks")  # no shared stack: see tests/fixtures/session_services.py
def test_two_concurrent_argilla_starts_both_succeed_and_leave_one_healthy_stack(tmp_path: Path) -> None:
    home, ports = second_stack_home(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATE_ARGILLA")} | {"CURATE_HOME": str(home)} | ports
    run = home / "run"
    try:
        starts = [subprocess.Popen(["bash", str(ARGILLA_SCRIPT), "start"], env=env, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(2)]
        errors = [p.communicate(timeout=600)[1] for p in starts]
        assert [p.returncode for p in starts] == [0, 0], "\n---\n".join(e[-2000:] for e in errors)
        assert sorted("already running" in e for e in errors) == [False, True]  # one started, one reused it
        assert not any("start failed" in e for e in errors)
        pids = {name: int((run / f"{name}.pid").read_text()) for name in ("redis", "osmem", "server", "worker")}
        for name, pid in pids.items():
            assert Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) is not running"
        status = subprocess.run(["bash", str(ARGILLA_SCRIPT), "status"], capture_output=True, text=True, env=env, timeout=120)
        assert status.returncode == 0 and f"healthy at http://127.0.0.1:{ports['CURATE_ARGILLA_PORT']}" in status.stdout
    finally:
        stop = subprocess.run(["bash", str(ARGILLA_SCRIPT), "stop"], capture_output=True, text=True, env=env, timeout=300)
    assert stop.returncode == 0, stop.stderr
    assert not list(run.glob("*.pid"))
