"""A FastAPI service that enqueues aqueue jobs in its requests' transactions (README.md)."""
