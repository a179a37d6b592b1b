"""ECS task metadata: which task, cluster, container and service this worker runs in."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from toolkit.registry import (
    opt_str,
)

logger = logging.getLogger("toolkit.heartbeat")  # the public path: operators filter on it

METADATA_TIMEOUT = 1.0

@dataclass(frozen=True)
class EcsMetadata:
    task_arn: str | None = None
    cluster: str | None = None
    container: str | None = None
    service: str | None = None


def _get_json(opener: Any, url: str, timeout: float) -> dict[str, Any] | None:
    import http.client

    if not url.startswith(("http://", "https://")):
        return None
    try:
        with opener.open(url, timeout=timeout) as resp:
            data = json.loads(resp.read(1_000_000))
    except (OSError, ValueError, http.client.HTTPException) as exc:
        logger.info("ECS metadata %s unavailable: %s", url, exc)
        return None
    return data if isinstance(data, dict) else None


def fetch_ecs_metadata(uri: str | None, timeout: float = METADATA_TIMEOUT) -> EcsMetadata | None:
    """Read this container's task ARN, cluster, container name and service name (when ECS gives
    one) from ``$ECS_CONTAINER_METADATA_URI_V4``. ``None`` when not on ECS or unreachable."""
    if not uri:
        return None
    # Imported here, once per worker start: every process importing the app imports this module.
    import urllib.request

    # The task metadata endpoint is link-local: never send it through HTTP(S)_PROXY.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    container = _get_json(opener, uri, timeout) or {}
    task = _get_json(opener, uri.rstrip("/") + "/task", timeout) or {}
    if not container and not task:
        return None
    labels = container.get("Labels")
    labels = labels if isinstance(labels, dict) else {}
    return EcsMetadata(
        task_arn=opt_str(labels.get("com.amazonaws.ecs.task-arn") or task.get("TaskARN")),
        cluster=opt_str(labels.get("com.amazonaws.ecs.cluster") or task.get("Cluster")),
        container=opt_str(container.get("Name") or labels.get("com.amazonaws.ecs.container-name")),
        service=opt_str(task.get("ServiceName")),
    )
