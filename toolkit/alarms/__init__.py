"""The alarm path: a CloudWatch alarm in, a Slack alert and (maybe) a forced deployment out.

    events       the three alarm event shapes parsed into one frozen ``AlarmEvent``
    settings     ``AlarmHandlerSettings``, read from the Lambda's environment
    messages     Slack Block Kit messages (pure)
    senders      webhook and bot-token senders, credentials, log redaction
    guards       the remediation guards (pure) and ``Decision``
    remediator   runs the guards against ECS and forces the deployment
    state        de-duplication, Slack threads and the hourly ledger (memory or DynamoDB)
    degraded     the state store's fallback when STATE_TABLE is misconfigured
    budget       the invocation's time budget (deadlines for every Slack and AWS call)
    responder    one alarm end to end; what is still owed; when to ask Lambda for a retry
    factory      build_responder: the responder wired from settings
"""

from toolkit.alarms.events import AlarmEvent, MetricRef
from toolkit.alarms.factory import build_responder
from toolkit.alarms.parsing import parse_event, try_parse_event
from toolkit.alarms.responder import AlarmOutcome, AlarmResponder
from toolkit.alarms.settings import AlarmHandlerSettings

__all__ = [
    "AlarmEvent",
    "AlarmHandlerSettings",
    "AlarmOutcome",
    "AlarmResponder",
    "MetricRef",
    "build_responder",
    "parse_event",
    "try_parse_event",
]
