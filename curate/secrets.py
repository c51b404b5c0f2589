"""Keep secret values out of logs, manifests and exports.

Secrets only ever come from environment variables. A variable is masked wherever text leaves the
process through these helpers when its name looks secret (API_KEY, TOKEN, SECRET, PASSWORD...) or
when a loaded config names it in any `*_env` setting (`api_key_env = "MY_PROVIDER_KEY"`), whatever
its name: `curate.config` registers those names as it validates a config.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from typing import Any

# Whole name parts only: MAX_TOKENS is a setting, HF_TOKEN a secret.
_SECRET_NAME = re.compile(r"(^|_)(API_?KEY|ACCESS_KEY|SECRET_KEY|TOKEN|SECRET|PASSWORD|PASSWD)(_|$)", re.IGNORECASE)
MASK = "***"
# Variable names that some config's `*_env` setting named in this process.
_named_by_config: set[str] = set()


def register_secret_env_names(names: Iterable[str]) -> None:
    _named_by_config.update(n for n in names if isinstance(n, str) and n)


def env_names_in(tree: Any) -> set[str]:
    """Values of every `*_env` key in a nested config tree (dicts and lists)."""
    found: set[str] = set()
    if isinstance(tree, dict):
        for key, value in tree.items():
            if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                found.add(value)
            else:
                found |= env_names_in(value)
    elif isinstance(tree, list):
        for item in tree:
            found |= env_names_in(item)
    return found


def _is_secret_name(name: str) -> bool:
    return name in _named_by_config or bool(_SECRET_NAME.search(name))


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    # Short values would mask ordinary words; real keys are long.
    return sorted({v for k, v in env.items() if _is_secret_name(k) and len(v) >= 6}, key=len, reverse=True)


def redact(text: str, environ: dict[str, str] | None = None) -> str:
    for value in secret_values(environ):
        text = text.replace(value, MASK)
    return text


_installed = False


def install_log_redaction() -> None:
    """Redact secrets in every log record created from now on, whatever handler emits it (idempotent).

    A record factory rather than a handler filter, so handlers added later (Prefect's, pytest's)
    are covered too.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string is logging's problem to report, not ours
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
