"""LLM judging shared by `curate eval` and the `judge` stage (rubrics), cheap answer signals, and
the review routing that decides which judged answers people see."""
