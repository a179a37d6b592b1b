"""Code run in subprocesses by the tests (workers, Celery apps)."""
