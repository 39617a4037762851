"""Runnable examples; their tests run with the suite (``make test``)."""
