"""The local stack and the scenarios of ``celery-ecs sandbox``: no AWS account, no Slack needed.

Used by ``celery-ecs sandbox`` and the end-to-end tests. Everything listens on 127.0.0.1 only.
Needs the ``sandbox`` extra (fakeredis[lua], moto[server]).
"""

from __future__ import annotations

from toolkit.sandbox.stack import EmbeddedRedis, LocalAws, RedisServer, free_port, local_broker

__all__ = ["EmbeddedRedis", "LocalAws", "RedisServer", "free_port", "local_broker"]
