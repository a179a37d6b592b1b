"""RabbitMQ's management HTTP API, for what AMQP cannot do: list the queues, read node memory.

``GET {management_url}/api/queues/{vhost}?columns=name,exclusive`` answers every queue of the
broker URL's virtual host. Only the names are used: lengths still come from a passive declare,
which is exact at the moment of the read, while the management statistics lag by their
collection interval (5 s by default).

The URL defaults to the broker's host on the management plugin's port (``http://host:15672``
for ``amqp://``, ``https://host`` for ``amqps://``, as Amazon MQ serves it); the credentials
default to the broker URL's. Standard library only (``urllib``): no new dependency.

``GET {management_url}/api/nodes?columns=name,mem_used,mem_limit,mem_alarm,disk_free_alarm``
gives each node's memory, its high watermark and the resource alarms that block publishers
(:func:`node_stats`); it needs a user with the ``monitoring`` tag (or administrator).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from toolkit.collector.brokers.base import BrokerStats
from toolkit.errors import BrokerError
from toolkit.urls import redact_url

# Celery's per-process queues: remote control (pidbox), its replies, and event receivers.
INTERNAL_SUFFIXES = (".celery.pidbox", ".reply.celery.pidbox")
INTERNAL_PREFIXES = ("celeryev.", "amq.gen-")


class ManagementUnavailable(BrokerError):
    """The management API could not be asked (not enabled, unreachable, refused, not JSON)."""


class ManagementUnreachable(ManagementUnavailable):
    """Nothing answered at the management URL (plugin not enabled, port closed, no route)."""


@dataclass(frozen=True)
class ManagementTarget:
    url: str = field(repr=False)  # base URL, no credentials
    user: str = field(repr=False)
    password: str = field(repr=False)
    vhost: str

    @property
    def safe_url(self) -> str:
        return redact_url(self.url)


def management_target(broker_url: str, management_url: str | None) -> ManagementTarget | None:
    """Where to ask and as whom; None when discovery through the API is turned off ("")."""
    if management_url == "":
        return None
    broker = urlsplit(broker_url)
    user = unquote(broker.username or "guest")
    password = unquote(broker.password or "guest")
    vhost = unquote(broker.path[1:]) if len(broker.path) > 1 else "/"
    if management_url is None:
        host = broker.hostname or "localhost"
        host = f"[{host}]" if ":" in host else host
        tls = broker.scheme.lower() == "amqps"
        base = f"https://{host}" if tls else f"http://{host}:15672"
    else:
        given = urlsplit(management_url)
        if given.username is not None:
            user = unquote(given.username)
            password = unquote(given.password or "")
        netloc = given.netloc.rpartition("@")[2]
        base = f"{given.scheme}://{netloc}{given.path}"
    return ManagementTarget(base.rstrip("/"), user, password, vhost)


def is_internal(name: str, exclusive: bool) -> bool:
    return exclusive or name.endswith(INTERNAL_SUFFIXES) or name.startswith(INTERNAL_PREFIXES)


class ManagementNotFound(ManagementUnavailable):
    """The API answered 404: no such queue (or virtual host)."""


def request_json(
    target: ManagementTarget, path: str, timeout: float, payload: object = None,
) -> object:
    """``GET`` (or, with ``payload``, ``POST``) ``{url}/api/{path}`` -> the decoded JSON."""
    token = base64.b64encode(f"{target.user}:{target.password}".encode()).decode("ascii")
    headers = {"Authorization": f"Basic {token}"}
    data = None
    if payload is not None:
        data = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"{target.url}/api/{path}", data=data, headers=headers,
                                     method="POST" if data is not None else "GET")
    where = f"the RabbitMQ management API at {target.safe_url}"
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ManagementNotFound(f"{where} answered 404") from None
        reason = "refused our credentials" if exc.code in (401, 403) else f"answered {exc.code}"
        raise ManagementUnavailable(f"{where} {reason}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        why = getattr(exc, "reason", None) or exc
        raise ManagementUnreachable(f"{where} is not reachable ({why})") from None
    except ValueError:
        raise ManagementUnavailable(f"{where} did not answer JSON") from None


def vhost_path(target: ManagementTarget) -> str:
    return quote(target.vhost, safe="")


def list_queues(target: ManagementTarget, timeout: float) -> list[str]:
    """The vhost's queues, Celery's internal and exclusive ones left out, sorted."""
    body = request_json(target, f"queues/{vhost_path(target)}?columns=name,exclusive", timeout)
    where = f"the RabbitMQ management API at {target.safe_url}"
    if not isinstance(body, list):
        raise ManagementUnavailable(f"{where} did not answer a list of queues")
    names = {
        str(q["name"]) for q in body
        if isinstance(q, dict) and "name" in q and not is_internal(str(q["name"]),
                                                                     bool(q.get("exclusive")))
    }
    return sorted(names)


def node_stats(target: ManagementTarget, timeout: float) -> BrokerStats:
    """The node closest to its memory high watermark (``mem_used`` / ``mem_limit``), and every
    resource alarm in force on any node (``memory on rabbit@a``, ``disk on rabbit@b``)."""
    body = request_json(target, "nodes?columns=name,mem_used,mem_limit,mem_alarm,disk_free_alarm",
                        timeout)
    nodes = [n for n in body if isinstance(n, dict)] if isinstance(body, list) else []
    if not nodes:
        raise ManagementUnavailable(
            f"the RabbitMQ management API at {target.safe_url} listed no nodes")
    alarms: list[str] = []
    worst: tuple[float, int, int | None] | None = None
    for node in nodes:
        name = str(node.get("name", "?"))
        if node.get("mem_alarm"):
            alarms.append(f"memory on {name}")
        if node.get("disk_free_alarm"):
            alarms.append(f"disk on {name}")
        used, limit = node.get("mem_used"), node.get("mem_limit")
        if not isinstance(used, int) or isinstance(used, bool):
            continue  # a node that is down reports no memory
        cap = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 \
            else None
        share = used / cap if cap else 0.0
        if worst is None or share > worst[0]:
            worst = (share, used, cap)
    if worst is None:
        return BrokerStats(alarms=tuple(alarms))
    return BrokerStats(used_memory=worst[1], max_memory=worst[2], alarms=tuple(alarms))
