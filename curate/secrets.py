"""Keep secret values out of logs, manifests and exports.

Secrets only ever come from environment variables. Any variable whose name looks secret (or
that a config names via `*_env`) is masked wherever text leaves the process through these helpers.
"""

from __future__ import annotations

import logging
import os
import re

# Whole name parts only: MAX_TOKENS is a setting, HF_TOKEN a secret.
_SECRET_NAME = re.compile(r"(^|_)(API_?KEY|ACCESS_KEY|SECRET_KEY|TOKEN|SECRET|PASSWORD|PASSWD)(_|$)", re.IGNORECASE)
MASK = "***"


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    # Short values would mask ordinary words; real keys are long.
    return sorted({v for k, v in env.items() if _SECRET_NAME.search(k) and len(v) >= 6}, key=len, reverse=True)


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
