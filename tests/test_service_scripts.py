"""The service scripts under load: a busy or slow listener is waited for, never mistaken for a free
port. (Two Argilla starts at once are tested in test_argilla_credentials, on the same fresh stack as
its credentials.)"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

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
