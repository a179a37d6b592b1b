"""The local stack: an embedded Redis broker and a loopback CloudWatch, no AWS account needed.

Used by ``celery-ecs sandbox`` and the end-to-end tests. Everything listens on 127.0.0.1 only.
Needs the ``sandbox`` extra (fakeredis[lua], moto[server]).
"""

from __future__ import annotations

from toolkit.sandbox.stack import EmbeddedRedis, LocalAws, free_port

__all__ = ["EmbeddedRedis", "LocalAws", "free_port"]
