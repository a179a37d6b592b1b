"""Acknowledge first, act after: how a press leaves the request Slack waits on (3 s at most).

A Lambda function URL answers when the handler returns, and a returned Lambda does no more work.
So the request's handler checks the signature and the user, hands the press on as a *job* and
returns 200; the job runs the guards and the remedy and reports in the thread.

* :class:`LambdaDeferrer` (in Lambda, ``AWS_LAMBDA_FUNCTION_NAME`` set): the function invokes
  itself asynchronously (``InvocationType=Event``, needs ``lambda:InvokeFunction`` on itself)
  with the job event :func:`job_event`. A function URL request always has the payload 2.0 shape,
  so no request from the URL can pass for a job; only a principal allowed to invoke the function
  directly can send one, and the job re-checks the user and every guard anyway.
* :class:`ThreadDeferrer` (the sandbox, tests, anything outside Lambda): a thread in the same
  process; :meth:`ThreadDeferrer.join` waits for the jobs started so far.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from toolkit.errors import AwsError, aws_error_code

__all__ = ["JOB_SOURCE", "Deferrer", "JobKind", "LambdaDeferrer", "ThreadDeferrer", "is_job",
           "job_event"]

JOB_SOURCE = "celery-ecs.slack-actions"
JobKind = Literal["act", "refuse"]
Job = Callable[[dict[str, Any]], None]


def job_event(kind: JobKind, click: Mapping[str, Any]) -> dict[str, Any]:
    return {"source": JOB_SOURCE, "kind": kind, "click": dict(click)}


def is_job(event: object) -> bool:
    return isinstance(event, dict) and event.get("source") == JOB_SOURCE and (
        "requestContext" not in event) and isinstance(event.get("click"), dict)


class Deferrer(Protocol):
    def defer(self, event: dict[str, Any], run: Job) -> None:
        """Run ``event`` after the request is answered (``run`` is the job's local runner)."""


class LambdaDeferrer:
    """Invokes the function ``function`` asynchronously with the job."""

    def __init__(self, function: str, client: Any = None, *,
                 factory: Callable[[], Any] | None = None) -> None:
        self.function = function
        self._client = client
        self._factory = factory

    @property
    def client(self) -> Any:
        if self._client is None:
            if self._factory is None:
                from toolkit.aws.clients import client as aws_client

                self._client = aws_client("lambda", connect_timeout=1, read_timeout=2,
                                          max_attempts=2)
            else:
                self._client = self._factory()
        return self._client

    def defer(self, event: dict[str, Any], run: Job) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.invoke(FunctionName=self.function, InvocationType="Event",
                               Payload=json.dumps(event).encode())
        except (ClientError, BotoCoreError) as exc:
            code = aws_error_code(exc) or type(exc).__name__
            raise AwsError(f"lambda:InvokeFunction of {self.function} failed: {code}",
                           aws_error_code(exc)) from exc


class ThreadDeferrer:
    """Runs each job in a daemon thread of this process."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def defer(self, event: dict[str, Any], run: Job) -> None:
        thread = threading.Thread(target=run, args=(event,), daemon=True,
                                  name="celery-ecs-slack-action")
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def join(self, timeout: float = 30.0) -> bool:
        """Wait for the jobs started so far; ``False`` if one still runs after ``timeout``."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
        return not any(t.is_alive() for t in threads)
