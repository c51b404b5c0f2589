"""curate: build multilingual blocked-topic SFT datasets with reasoning traces."""

__version__ = "0.1.0"

import os as _os

# No telemetry: Prefect's embedded server (`curate run` without PREFECT_API_URL) sends usage
# analytics by default. Off unless the user chose; set before anything imports prefect.
_os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Prefect waits 20 s for that embedded server to start; on a busy 2-core machine it can take
# longer (seen at load 8: `curate run` failed with "Timed out while attempting to connect to
# ephemeral Prefect API server"). A user's own setting wins.
_os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")

from curate.secrets import install_log_redaction as _install_log_redaction  # noqa: E402

# Importing the library is enough to keep secrets out of every log line.
_install_log_redaction()
