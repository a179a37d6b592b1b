"""Task safety: single-instance locks and checkpoints, for the tasks the workers run.

    lock         TaskLock: a Redis TTL lock with an owner token (any code)
    decorator    single_instance: the Celery decorator built on TaskLock
    checkpoints/ progress per (task, key) in SQLite or MySQL, so a failed task resumes

Public paths: ``toolkit.locks`` and ``toolkit.checkpoints``.
"""
