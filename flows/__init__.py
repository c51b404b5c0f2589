"""Prefect flows: curation, review sync and release. They compose library stages and add no logic."""
