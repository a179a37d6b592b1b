"""One Slack button press end to end: the request (acknowledged within Slack's 3 s), then the job.

**The request** (:meth:`SlackActions.acknowledge`, a function URL event):

1. the signature (:func:`~toolkit.alarms.slackactions.request.check_signature`): unsigned,
   wrongly signed, older than 5 minutes (a replay), not a POST, too large: **401**, nothing done,
   and the log line says why and the body's length, never a byte of the body or the headers;
2. the payload: not a celery-ecs button (another app's interaction, a malformed payload): 200,
   logged, nothing done;
3. the job is handed on (:mod:`~toolkit.alarms.slackactions.deferral`): ``act`` for a user in
   ``SLACK_ALLOWED_USERS``, ``refuse`` for anyone else; 200. A deferral that fails answers 500
   (Slack tells the person the press did not go through).

**The job** (:meth:`SlackActions.work`): ``refuse`` posts the ephemeral refusal, nothing more.
``act`` checks the user again, then claims ``click#<press>`` in the state table (the same press
delivered twice is done once), and runs the remedy (:mod:`~toolkit.alarms.slackactions.remedies`:
every guard of the automatic path, the same ledger, lock and cooldown) or the mute, then says in
the alert's thread what happened or why not. Every press leaves one ``slack_action`` log line
(who, which button, which service, the decision): the audit trail beside the Slack thread, the
ECS deployment and the ``celery-ecs:remediated-at`` tag.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from toolkit.alarms.buttons import ACTION_MUTE, ACTION_REDEPLOY, ACTION_STOP_TASKS, MUTE_SECONDS
from toolkit.alarms.decision import Decision, log_decision
from toolkit.alarms.slackactions.click import Click, parse_click
from toolkit.alarms.slackactions.deferral import Deferrer, is_job, job_event
from toolkit.alarms.slackactions.remedies import ClickRemediator
from toolkit.alarms.slackactions.replies import (
    decision_reply,
    mute_reply,
    not_allowed,
    refusal_reply,
)
from toolkit.alarms.slackactions.reply import Replier
from toolkit.alarms.slackactions.request import HttpRequest, check_signature, http_response
from toolkit.alarms.slackactions.settings import SlackActionsSettings
from toolkit.alarms.state import StateStore
from toolkit.env import ENV_SLACK_SIGNING_SECRET, ENV_STATE_TABLE
from toolkit.errors import ToolkitError

__all__ = ["CLICK_TTL", "SlackActions"]

log = logging.getLogger("toolkit.alarms.slackactions")

CLICK_TTL = timedelta(minutes=15)  # longer than Slack's 5-minute replay window
_LABELS = {ACTION_REDEPLOY: "Redeploy now", ACTION_STOP_TASKS: "Stop stuck tasks",
           ACTION_MUTE: "Mute 1 h"}


def _audit(**fields: Any) -> None:
    log.info(json.dumps({"event": "slack_action", **fields}, default=str))


class SlackActions:
    def __init__(
        self,
        settings: SlackActionsSettings,
        *,
        remediator: ClickRemediator,
        state: StateStore,
        deferrer: Deferrer,
        replier: Replier,
        signing_secret: Callable[[], str | None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.remediator = remediator
        self.state = state
        self.deferrer = deferrer
        self.replier = replier
        self._signing_secret = signing_secret
        self.clock = clock

    def handle(self, event: object, context: object = None) -> dict[str, Any]:
        """A function URL request, or a job this function sent itself."""
        request = HttpRequest.from_event(event)
        if request is not None:
            return self.acknowledge(request)
        if is_job(event):
            assert isinstance(event, dict)
            self.work(event)
            return {"status": "done"}
        log.warning(json.dumps({"event": "unrecognised_event",
                                "type": type(event).__name__}))
        return {"status": "ignored"}

    # -- the request: answered within Slack's 3 s --

    def acknowledge(self, request: HttpRequest) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            refused = check_signature(request, self._signing_secret, self.clock().timestamp())
        except ToolkitError as exc:  # the secret could not be read: nothing can be verified
            log.error(json.dumps({"event": "slack_request_refused", "why": "secret-unavailable",
                                  "error": str(exc)}))
            return http_response(503, "try again")
        if refused is not None:
            level = logging.ERROR if refused == "no-secret" else logging.WARNING
            log.log(level, json.dumps({
                "event": "slack_request_refused", "why": refused, "bytes": len(request.body),
                "request_id": request.request_id[:80],
                **({"setting": ENV_SLACK_SIGNING_SECRET} if refused == "no-secret" else {})}))
            return http_response(401, "unauthorized")
        click = parse_click(request.body)
        if isinstance(click, str):
            log.info(json.dumps({"event": "slack_action_ignored", "why": click}))
            return http_response(200)
        allowed = click.user in self.settings.allowed_users
        try:
            self.deferrer.defer(job_event("act" if allowed else "refuse", click.to_job()),
                                self.work)
        except ToolkitError as exc:
            log.error(json.dumps({"event": "slack_action_not_started", "error": str(exc),
                                  "user": click.user, "action": click.action}))
            return http_response(500, "could not start")
        _audit(phase="acknowledged", user=click.user, action=click.action,
               allowed=allowed, ms=round((time.perf_counter() - started) * 1000, 1),
               **_where(click))
        return http_response(200)

    # -- the job: guards, remedy, reply --

    def work(self, event: dict[str, Any]) -> None:
        try:
            click = Click.from_job(event.get("click") or {})
        except ValueError as exc:
            log.error(json.dumps({"event": "slack_action_malformed", "error": str(exc)}))
            return
        now = self.clock()
        try:
            self._work(click, event.get("kind"), now)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the person unanswered
            log.exception(json.dumps({"event": "slack_action_crashed",
                                      "error": type(exc).__name__}))
            self.replier.thread(click, refusal_reply(
                _LABELS[click.action], click.user, now,
                f"unexpected {type(exc).__name__} (see the Slack actions log)"))

    def _work(self, click: Click, kind: object, now: datetime) -> None:
        label = _LABELS[click.action]
        if kind != "act" or click.user not in self.settings.allowed_users:
            self.replier.ephemeral(click, not_allowed(click.user))
            _audit(phase="refused", why="not-allowed", user=click.user, action=click.action,
                   **_where(click))
            return
        if not self.settings.handler.state_table:
            self._refuse(click, label, now, "misconfigured", (
                f"{ENV_STATE_TABLE} is not set: the buttons share the alarm handler's ledger, "
                "cooldown lock and mutes through it"))
            return
        try:
            first = self.state.claim(f"click#{click.key}", now, CLICK_TTL)
        except ToolkitError as exc:  # the remedy's own lock still stands in the way of a twin
            log.error(json.dumps({"event": "state_unavailable", "error": str(exc)}))
            first = True
        if not first:
            _audit(phase="duplicate", user=click.user, action=click.action, **_where(click))
            return
        if click.value is None:
            self._refuse(click, label, now, "unreadable",
                         f"the button could not be read ({click.value_error})")
            return
        if click.action == ACTION_MUTE:
            self._mute(click, now)
            return
        if click.action == ACTION_REDEPLOY:
            decision = self.remediator.redeploy(click.value, user=click.user, now=now)
        else:
            decision = self.remediator.stop(click.value, user=click.user, now=now)
        log_decision(decision)
        posted = self.replier.thread(click, decision_reply(decision, click.user, now))
        _audit(phase="done", user=click.user, action=click.action, code=decision.code,
               done=decision.action, reason=decision.reason, replied=posted, **_where(click))

    def _mute(self, click: Click, now: datetime) -> None:
        assert click.value is not None
        result = self.remediator.mute(click.value, user=click.user, now=now,
                                      seconds=MUTE_SECONDS)
        if isinstance(result, Decision):
            log_decision(result)
            self._refuse(click, "Mute 1 h", now, result.code, result.reason)
            return
        mute, already = result
        posted = self.replier.thread(click, mute_reply(mute, click.user, now, already=already))
        _audit(phase="done", user=click.user, action=click.action,
               code="already-muted" if already else "muted", until=mute.until.isoformat(),
               replied=posted, **_where(click))

    def _refuse(self, click: Click, label: str, now: datetime, code: str, reason: str) -> None:
        posted = self.replier.thread(click, refusal_reply(label, click.user, now, reason))
        _audit(phase="refused", why=code, reason=reason, user=click.user, action=click.action,
               replied=posted, **_where(click))


def _where(click: Click) -> dict[str, Any]:
    value = click.value
    if value is None:
        return {}
    return {"alarm": value.alarm[:200], "cluster": value.cluster[:200],
            "service": value.service[:200], **({"tasks": list(value.tasks)} if value.tasks
                                               else {})}
