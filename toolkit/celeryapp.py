"""Which broker a Celery app talks to: one answer for the heartbeat, the locks and the beat task.

Celery takes ``broker_url`` (a string, a ``;``-separated failover list, or a list), and lets
``broker_write_url`` / ``broker_read_url`` override it for publishing / consuming. Writers (the
heartbeat registry, task locks) use the write URL; readers (the collector's beat task) the read
URL. Of a failover list, the first URL is the one Celery connects to first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from toolkit.env import DEFAULT_PRIORITY_STEPS, DEFAULT_SEPARATOR
from toolkit.errors import ConfigError
from toolkit.urls import url_scheme

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})


@dataclass(frozen=True)
class AppBroker:
    """The broker URL of a Celery app and the transport options the toolkit needs from it."""

    url: str = field(repr=False)  # may hold a password
    global_keyprefix: str = ""
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    separator: str = DEFAULT_SEPARATOR

    @property
    def scheme(self) -> str:
        return url_scheme(self.url)

    @property
    def is_redis(self) -> bool:
        return self.scheme in REDIS_SCHEMES


def first_url(value: object) -> str:
    """The first URL of a Celery broker setting: a string, a ``;`` list, or a list/tuple."""
    if isinstance(value, list | tuple):
        value = value[0] if value else ""
    return str(value or "").split(";", 1)[0].strip()


def broker_of(app: Any, purpose: Literal["read", "write"] = "write") -> AppBroker:
    """The broker ``app`` writes to (``purpose="write"``) or consumes from (``"read"``).

    Raises :class:`ConfigError` when the app has no broker URL at all.
    """
    conf = app.conf
    override = conf.broker_write_url if purpose == "write" else conf.broker_read_url
    url = first_url(override or conf.broker_url)
    if not url:
        raise ConfigError("the Celery app has no broker_url")
    options = dict(conf.broker_transport_options or {})
    return AppBroker(
        url=url,
        global_keyprefix=str(options.get("global_keyprefix") or ""),
        priority_steps=tuple(options.get("priority_steps", DEFAULT_PRIORITY_STEPS)),
        separator=str(options.get("sep", DEFAULT_SEPARATOR)),
    )
