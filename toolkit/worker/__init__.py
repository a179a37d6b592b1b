"""The worker side: what runs inside each Celery worker (and celery beat) container.

    settings     HeartbeatSettings, read from the CELERY_ECS_HEARTBEAT_* environment
    metadata     ECS task metadata (task ARN, cluster, service)
    beater       one heartbeat: file, ready file, registry entry (Celery-agnostic)
    counting     per-task counts: shared memory written by the pool processes, flushed per beat
    bootstep     the Celery bootstep and signals that drive the beater; ``install(app)``
    healthcheck  the container probe (``celery-ecs healthcheck``), standard library only
    beatbeat     celery beat's heartbeat, written by each scheduler tick (file + beat registry)
    beatcheck    ``celery-ecs healthcheck beat``: the beat file's last tick, standard library only

This ``__init__`` imports nothing: the health check runs every 30 s in every container and must
not pay for Celery, boto3 or redis. ``toolkit.heartbeat`` is the public path of the bootstep.
"""
