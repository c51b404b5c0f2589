"""curate: build multilingual blocked-topic SFT datasets with reasoning traces."""

__version__ = "0.1.0"

from curate.secrets import install_log_redaction as _install_log_redaction

# Importing the library is enough to keep secrets out of every log line.
_install_log_redaction()
