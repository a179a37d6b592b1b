"""Container probe for ECS health checks: ``heartbeat`` and ``ping`` modes.

This module imports only the standard library at import time: ``celery-ecs healthcheck
heartbeat`` runs every 30 s in every container, so it must cost a few tens of milliseconds, not
the seconds a probe importing the user's Celery app costs. ``kombu`` is imported inside
:func:`ping` only.

Exit codes (the ECS ``CMD`` contract: 0 healthy, anything else unhealthy):

    0  healthy          the worker proved it is alive
    1  unhealthy        stale/absent/future heartbeat, no ping reply, broker unreachable
    2  misconfigured    missing or malformed broker URL, wrong credentials, bad arguments

Both probe functions return a :class:`ProbeResult` and never raise for expected failures.

Imports at start: the standard library and the core modules :mod:`toolkit.env` and
:mod:`toolkit.urls` (themselves standard library only).
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from typing import Any, Literal

from toolkit.env import (
    DEFAULT_HEARTBEAT_FILE,
    ENV_BROKER_URL,
    ENV_BROKER_URL_FALLBACK,
    ENV_HEARTBEAT_FILE,
)

Status = Literal["healthy", "unhealthy", "misconfigured"]

EXIT_CODES: dict[str, int] = {"healthy": 0, "unhealthy": 1, "misconfigured": 2}

DEFAULT_MAX_AGE = 30.0
DEFAULT_PING_TIMEOUT = 3.0
#: A heartbeat file whose mtime is more than this many seconds ahead of the clock is stale: after
#: a backwards clock step the worker rewrites it at its next beat, so this costs one probe at most,
#: while trusting it would keep a frozen worker "healthy" until the clock caught up.
FUTURE_TOLERANCE = 1.0
#: Broker URL schemes the probe can ping a worker through (checked before importing kombu).
#: ``sentinel://`` is not among them: it needs a master name the probe has no option for.
PING_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps", "pyamqp", "librabbitmq", "memory"})


class ProbeResult:
    """What a probe found: a status and one short line saying why."""

    __slots__ = ("status", "message")

    def __init__(self, status: Status, message: str) -> None:
        self.status: Status = status
        self.message = message

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def line(self) -> str:
        return f"{self.status}: {self.message}"

    def __repr__(self) -> str:
        return f"ProbeResult({self.status!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProbeResult):
            return NotImplemented
        return (self.status, self.message) == (other.status, other.message)

    def __hash__(self) -> int:
        return hash((self.status, self.message))


# --- heartbeat mode ---------------------------------------------------------------------------


def default_heartbeat_file(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(ENV_HEARTBEAT_FILE) or DEFAULT_HEARTBEAT_FILE


def check_heartbeat(
    path: str | None = None, max_age: float = DEFAULT_MAX_AGE, *, now: float | None = None
) -> ProbeResult:
    """Healthy when the heartbeat file was touched less than ``max_age`` seconds ago.

    An absent file, an old one, or one from the future (more than :data:`FUTURE_TOLERANCE` ahead
    of ``now``) is unhealthy. ``path`` defaults to ``$CELERY_ECS_HEARTBEAT_FILE``, then
    ``/tmp/celery-ecs-heartbeat``.
    """
    if not max_age > 0:  # also rejects NaN
        return ProbeResult("misconfigured", f"--max-age must be greater than 0, got {max_age}")
    path = path or default_heartbeat_file()
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return ProbeResult(
            "unhealthy",
            f"no heartbeat file at {path} (worker not started yet, or bootstep not installed)",
        )
    except OSError as exc:
        return ProbeResult("misconfigured", f"cannot read heartbeat file {path}: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):  # e.g. --file /tmp: a directory's mtime proves nothing
        return ProbeResult("misconfigured", f"heartbeat path {path} is not a regular file")
    mtime = info.st_mtime
    age = (time.time() if now is None else now) - mtime
    if age < -FUTURE_TOLERANCE:
        return ProbeResult(
            "unhealthy",
            f"heartbeat file {path} is {-age:.1f} s in the future (clock skew): treated as stale",
        )
    if age > max_age:
        return ProbeResult("unhealthy", f"heartbeat is {age:.1f} s old (max {max_age:g} s)")
    return ProbeResult("healthy", f"heartbeat is {max(age, 0.0):.1f} s old (max {max_age:g} s)")


# --- ping mode --------------------------------------------------------------------------------


def default_node(environ: dict[str, str] | None = None) -> str:
    """``celery@HOST``: the node name a worker started without ``-n`` gets.

    HOST is ``socket.gethostname()``, as Celery itself uses for the default node name (in an ECS
    container that is also ``$HOSTNAME``); ``$HOSTNAME`` is only the fallback when it is empty.
    """
    import socket

    host = socket.gethostname()
    if not host:
        env = os.environ if environ is None else environ
        host = env.get("HOSTNAME") or "localhost"
    return f"celery@{host}"


def default_broker_url(environ: dict[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get(ENV_BROKER_URL) or env.get(ENV_BROKER_URL_FALLBACK) or None


def _validate_broker_url(url: str | None) -> str | None:
    """Return a reason the URL cannot be used, or None when it looks usable.

    The reasons are fixed texts plus the redacted URL: URL parsers quote the part they choke
    on, which for a password with an unencoded ``/``, ``?``, ``#`` or ``@`` is a piece of it.
    """
    from urllib.parse import urlsplit

    from toolkit.urls import redact_url

    if not url:
        return f"no broker URL: pass --broker or set {ENV_BROKER_URL}"
    safe = redact_url(url)
    if ";" in url:
        return (
            f"malformed broker URL {safe}: a ';' failover list; pass the one broker URL this "
            "worker uses"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return (
            f"malformed broker URL {safe}: host or port cannot be parsed (percent-encode "
            "'/', '?', '#' and '@' in the user name and password)"
        )
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        return "malformed broker URL: expected SCHEME://HOST[:PORT]/..."
    if scheme not in PING_SCHEMES:
        known = ", ".join(sorted(PING_SCHEMES))
        return f"unsupported broker URL scheme {scheme!r} (use one of {known})"
    if "@" in url.partition("://")[2][len(parts.netloc):]:
        # user:pa/ss@host parses as host "user", port "pa"...: an '@' after the authority is
        # an unencoded character of the password, and connecting would go to the wrong host.
        return (
            f"malformed broker URL {safe}: '@' after the host (percent-encode '/', '?', '#' "
            "and '@' in the user name and password)"
        )
    if scheme != "memory" and not parts.hostname:
        return f"malformed broker URL {safe}: no host"
    return None


def _is_auth_error(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc)
    return (
        "Authentication" in name
        or name == "AccessRefused"
        or "WRONGPASS" in text
        or "NOAUTH" in text
        or "ACCESS_REFUSED" in text
    )


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def ping(
    broker_url: str | None,
    node: str | None = None,
    timeout: float = DEFAULT_PING_TIMEOUT,
    *,
    global_keyprefix: str = "",
) -> ProbeResult:
    """Ping one worker node through the broker's control channel, without the user's app.

    Only ``node`` receives the ping (``destination=[node]``) and the probe returns on its first
    reply, so a healthy worker answers in milliseconds. No reply within ``timeout`` seconds ->
    unhealthy. An unreachable broker is unhealthy too (the worker cannot work either); ECS's
    ``retries`` x ``interval`` is how long a broker outage is tolerated before the task is replaced.
    ``global_keyprefix`` must match the workers' Redis transport option of that name, if set.
    """
    problem = _validate_broker_url(broker_url)
    if problem is not None:
        return ProbeResult("misconfigured", problem)
    assert broker_url is not None
    if not timeout > 0:
        return ProbeResult("misconfigured", f"--timeout must be greater than 0, got {timeout}")
    node = node or default_node()
    if "@" not in node:
        return ProbeResult("misconfigured", f"node name {node!r} must look like NAME@HOST")

    import importlib

    from toolkit.urls import redact_url

    # kombu is untyped: hold its classes as Any (and import it only in this mode).
    Connection: Any = importlib.import_module("kombu").Connection
    Mailbox: Any = importlib.import_module("kombu.pidbox").Mailbox

    safe = redact_url(broker_url)
    started = time.monotonic()
    try:
        conn: Any = Connection(
            broker_url,
            connect_timeout=timeout,
            transport_options={
                "max_retries": 0,
                "socket_timeout": timeout,
                **({"global_keyprefix": global_keyprefix} if global_keyprefix else {}),
            },
        )
    except Exception as exc:  # noqa: BLE001 - kombu raises KeyError/ValueError/ImportError
        # the class only: the text may quote part of the URL
        return ProbeResult("misconfigured", f"cannot use broker URL {safe}: {type(exc).__name__}")
    try:
        try:
            # One attempt, no retry loop: a probe must answer within the ECS timeout.
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=timeout
            )
        except ValueError as exc:  # kombu/redis-py reject a value in the URL (db, options)
            return ProbeResult(
                "misconfigured", f"cannot use broker URL {safe}: {type(exc).__name__}"
            )
        except Exception as exc:  # noqa: BLE001 - connection errors differ per transport
            if _is_auth_error(exc) or _is_auth_error(exc.__cause__ or exc):
                return ProbeResult("misconfigured", f"broker refused credentials at {safe}")
            return ProbeResult("unhealthy", f"broker unreachable at {safe}: {_short(exc)}")
        mailbox = Mailbox(
            "celery",  # Celery's control_exchange default: exchange "celery.pidbox"
            type="fanout",
            accept=["json"],
            serializer="json",
            reply_queue_ttl=300.0,
            reply_queue_expires=10.0,
        )(conn)
        remaining = max(timeout - (time.monotonic() - started), 0.1)
        try:
            replies = mailbox._broadcast(
                "ping", {}, destination=[node], reply=True, timeout=remaining, limit=1
            )
        except Exception as exc:  # noqa: BLE001
            if _is_auth_error(exc):
                return ProbeResult("misconfigured", f"broker refused credentials at {safe}")
            return ProbeResult("unhealthy", f"ping through {safe} failed: {_short(exc)}")
    finally:
        with contextlib.suppress(Exception):  # closing a broken connection must not mask
            conn.release()
    elapsed = time.monotonic() - started
    for reply in replies or ():
        if isinstance(reply, dict) and node in reply:
            return ProbeResult("healthy", f"{node} answered ping in {elapsed:.2f} s")
    return ProbeResult(
        "unhealthy",
        f"no reply from {node} within {timeout:g} s (frozen or blocked, or no worker has this "
        "node name: check --node / the worker's -n)",
    )


def ping_or_heartbeat(
    broker_url: str | None,
    node: str | None,
    timeout: float,
    heartbeat_file: str,
    max_age: float = DEFAULT_MAX_AGE,
    *,
    global_keyprefix: str = "",
) -> ProbeResult:
    """The combined mode: healthy when ``node`` answers the ping **or** the heartbeat file is
    fresher than ``max_age``.

    A busy solo-pool worker cannot answer pings while a task runs (the task runs in its loop),
    but its heartbeat stays fresh (up to its busy cap), so this mode does not kill it, while a
    frozen worker fails both. A misconfigured ping (bad URL, credentials) is reported as such,
    not hidden by a fresh heartbeat: fix the probe rather than run half of it.
    """
    if not max_age > 0:
        return ProbeResult("misconfigured", f"--max-age must be greater than 0, got {max_age}")
    pinged = ping(broker_url, node, timeout, global_keyprefix=global_keyprefix)
    if pinged.status != "unhealthy":
        return pinged
    beat = check_heartbeat(heartbeat_file, max_age)
    if beat.status == "healthy":
        return ProbeResult("healthy", f"no ping reply, but {beat.message} (busy worker?)")
    if beat.status == "misconfigured":
        return beat
    return ProbeResult("unhealthy", f"{pinged.message}; and {beat.message}")
