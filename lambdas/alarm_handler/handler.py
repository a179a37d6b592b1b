"""Alarm handler Lambda: CloudWatch alarm (of this ENVIRONMENT) -> guarded remedy (a forced
redeploy, or stopping the stuck tasks, only on live evidence) -> Slack alert -> follow-up.

Thin by design: settings are read and clients built once per container (on the first event, so
importing this module stays fast); everything else is ``toolkit.alarms.responder``. Returns a
small dict; raises only when a retry can help (see :mod:`toolkit.alarms.responder`).
"""

from __future__ import annotations

import logging
from typing import Any

from toolkit.alarms.factory import build_responder
from toolkit.alarms.responder import AlarmResponder
from toolkit.alarms.settings import AlarmHandlerSettings

# Decisions and outcomes are INFO lines; the Lambda runtime's root logger defaults to WARNING.
logging.getLogger("toolkit").setLevel(logging.INFO)

_responder: AlarmResponder | None = None


def responder() -> AlarmResponder:
    global _responder
    if _responder is None:
        _responder = build_responder(AlarmHandlerSettings.from_env())
    return _responder


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    return responder().handle(event, context)
