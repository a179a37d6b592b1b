"""The worker side: what runs inside each Celery worker container.

    settings     HeartbeatSettings, read from the CELERY_ECS_HEARTBEAT_* environment
    metadata     ECS task metadata (task ARN, cluster, service)
    beater       one heartbeat: file, ready file, registry entry (Celery-agnostic)
    counting     per-task counts: shared memory written by the pool processes, flushed per beat
    bootstep     the Celery bootstep and signals that drive the beater; ``install(app)``
    healthcheck  the container probe (``celery-ecs healthcheck``), standard library only

This ``__init__`` imports nothing: the health check runs every 30 s in every container and must
not pay for Celery, boto3 or redis. ``toolkit.heartbeat`` is the public path of the bootstep.
"""
