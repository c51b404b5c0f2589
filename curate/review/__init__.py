"""Human review in Argilla: push candidates, pull responses, agreement, conflict policy."""
