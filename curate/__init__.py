"""curate: build multilingual blocked-topic SFT datasets with reasoning traces."""

__version__ = "0.1.0"
