"""The alarm path: a CloudWatch alarm in; a guarded remedy, a Slack alert and a follow-up out.

    events       the three alarm event shapes parsed into one frozen ``AlarmEvent`` (parsing)
    scope        own environment only: another environment's alarm is ignored
    settings     ``AlarmHandlerSettings``, read from the Lambda's environment
    messages     the alert (pure); notes: the follow-ups and the escalation (pure)
    buttons      the alert's buttons and their value (pure); mute: "Mute 1 h", read here
    slackactions the Slack buttons' Lambda: signature, press, guarded remedies, replies
    credentials  where the Slack secrets come from, and their redaction in logs
    senders      webhook and bot-token senders (a POST whose answer was lost is not re-sent)
    posting      one state change's alert and follow-up, each at most once
    decision     ``Decision``, ``Target`` and the remedies (deploy, stop-tasks)
    guards       the remediation guards (pure)
    evidence     the live datapoints (GetMetricData) read before any ECS call
    why          the collector's verdict record: the alert's "why", the tasks to stop
    taskstop     stopping only the stuck tasks (plan and ECS calls)
    escalation   "still stuck after a forced deployment"
    failures     AWS failures as decisions; ecsreads: the ECS reads around a remedy
    remediator   runs the guards against AWS and applies the remedy
    state        de-duplication, Slack threads and the hourly ledger (memory or DynamoDB)
    degraded     the state store's fallback when STATE_TABLE is misconfigured
    record       what one state change still owes
    budget       the invocation's time budget (deadlines for every Slack and AWS call)
    responder    one alarm end to end; when to ask Lambda for a retry
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
