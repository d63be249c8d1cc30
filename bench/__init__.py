"""Annal bench CLI: produce, consume, e2e and ceiling measurements (``annal-bench``)."""
