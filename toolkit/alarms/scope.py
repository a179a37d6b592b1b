"""Own environment only: is this alarm one of this handler's ``ENVIRONMENT``? (pure)

Environment names can be prefixes of each other (``prod`` and ``prod-eu``), so ``prod-`` opening
an alarm name proves nothing. An alarm belongs to environment ``E`` when:

1. its name starts with ``E-``;
2. every input metric carrying an ``Environment`` dimension says ``E``;
3. when it names one ECS service (``ServiceName``), its name starts with ``E-<service>-``, as the
   toolkit names every service alarm (``prod-eu-worker-MemoryHigh`` names service ``worker``: it
   is ``prod-eu``'s, not ``prod``'s ``eu-worker``).

Anything else is another environment's (or nobody's): logged as ``foreign_alarm`` and ignored,
no Slack post and no AWS call. Remediating alarms are held to more (the exact
``<environment>-<service>-<metric>`` name and the dimension present): see
:func:`toolkit.alarms.guards.target_from_alarm`. With no ``ENVIRONMENT`` nothing can be told
apart: every alarm is posted and none acted on.
"""

from __future__ import annotations

from toolkit.alarms.events import AlarmEvent
from toolkit.env import ENV_ENVIRONMENT
from toolkit.metricnames import ENVIRONMENT

__all__ = ["foreign"]


def foreign(alarm: AlarmEvent, environment: str) -> str | None:
    """Why ``alarm`` is not of ``environment`` (``None`` when it is, or when no environment is
    configured)."""
    if not environment:
        return None
    prefix = f"{environment}-"
    if not alarm.name.startswith(prefix):
        return f"the alarm's name does not start with {prefix} ({ENV_ENVIRONMENT}={environment})"
    inputs = alarm.inputs or ((alarm.metric,) if alarm.metric else ())
    found = {m.dimension(ENVIRONMENT) for m in inputs}
    others = sorted(v for v in found if v is not None and v != environment)
    if others:
        return (
            f"its metrics are of Environment={', '.join(others)}, not {environment} "
            f"({ENV_ENVIRONMENT})"
        )
    services = alarm.named_services
    if len(services) == 1:
        service = services[0][1]
        if not alarm.name.startswith(f"{prefix}{service}-"):
            return (
                f"it watches service {service} but is not named {prefix}{service}-...: the "
                f"alarm of another environment whose name starts with {prefix}"
            )
    return None
