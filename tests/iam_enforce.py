"""IAM enforcement on the in-process moto server, with resources and condition keys.

moto authenticates every request once ``INITIAL_NO_AUTH_ACTION_COUNT`` is reached (signature,
access key, the principal's policies), but authorises most services on the action alone: it
passes the resource ``*`` for ECS, DynamoDB, CloudWatch, Secrets Manager, Logs and KMS, so a
statement scoped to an ARN never matches, and it evaluates no condition key other than
``StringEquals`` on trust policies. :func:`enforced` replaces moto's final check with one that
gives each action the resources and condition keys the Service Authorization Reference lists
for it (``AUTHORIZATION`` below, read from the request the SDK sent) and evaluates the policy
as IAM does: an explicit Deny wins, else an Allow whose action, resource and every condition
match (a missing key fails the condition). Every decision is recorded.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from moto import settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam.access_control import IAMRequest

Context = dict[str, str]
#: SigV4 signing names (what moto reads from the credential scope) that differ from the IAM
#: service prefix of the same service
IAM_PREFIX = {"monitoring": "cloudwatch"}
#: API operations (what moto names the action) whose IAM action has another name
IAM_ACTION = {"lambda:Invoke": "lambda:InvokeFunction"}
Grant = tuple[str, Context]  # one resource ARN and the request's condition keys
PATH = "__path__"  # the request's path, beside its parameters (REST APIs name resources there)


@dataclass
class Decision:
    principal: str
    action: str
    resource: str
    allowed: bool
    sids: tuple[str, ...] = ()  # the Allow statements that matched


@dataclass
class Ledger:
    decisions: list[Decision] = field(default_factory=list)

    def denied(self) -> list[Decision]:
        return [d for d in self.decisions if not d.allowed]

    def actions(self) -> set[str]:
        return {d.action for d in self.decisions}


def _params(request: IAMRequest) -> dict[str, Any]:
    body = request._body or b""
    if body[:1] in (b"{", b"["):
        data: dict[str, Any] = json.loads(body)
        return data
    flat = {k: v[0] for k, v in parse_qs(body.decode() if body else "").items()}
    flat.update({k: v[0] if isinstance(v, list) else v for k, v in (request._data or {}).items()})
    return flat


def _ecs(region: str, account: str, kind: str, cluster: str, name: str) -> str:
    if name.startswith("arn:"):
        return name
    return f"arn:aws:ecs:{region}:{account}:{kind}/{cluster}/{name}"


def _cluster_name(value: str | None) -> str:
    return (value or "default").rsplit("/", 1)[-1]


def _grants(action: str, p: dict[str, Any], region: str, account: str) -> list[Grant]:
    """The resources and condition keys AWS authorises ``action`` on, from its request."""
    service, op = action.split(":", 1)
    if service == "ecs":
        return _ecs_grants(op, p, region, account)
    return _other_grants(service, op, p, region, account)


def _ecs_grants(op: str, p: dict[str, Any], region: str, account: str) -> list[Grant]:
    cluster = _cluster_name(p.get("cluster"))
    ctx = {"ecs:cluster": f"arn:aws:ecs:{region}:{account}:cluster/{cluster}"}
    if op in ("DescribeServices", "UpdateService"):
        names = p.get("services") or [p.get("service")]
        return [(_ecs(region, account, "service", cluster, n), ctx) for n in names]
    if op in ("DescribeTasks", "StopTask"):
        tasks = p.get("tasks") or [p.get("task")]
        return [(_ecs(region, account, "task", cluster, t), ctx) for t in tasks]
    if op in ("TagResource", "ListTagsForResource"):
        return [(p["resourceArn"], {})]
    return [("*", ctx)]  # ListServices, ListTasks: no resource type, the ecs:cluster key


def _other_grants(service: str, op: str, p: dict[str, Any], region: str,
                  account: str) -> list[Grant]:
    if service == "cloudwatch":
        if op == "PutMetricData":
            return [("*", {"cloudwatch:namespace": p.get("Namespace", "")})]
        return [("*", {})]
    if service == "dynamodb":
        tables = list(p["RequestItems"]) if "RequestItems" in p else [p["TableName"]]
        return [(f"arn:aws:dynamodb:{region}:{account}:table/{t}", {}) for t in tables]
    if service == "secretsmanager":
        return [(p["SecretId"], {})]
    if service == "logs":
        group, stream = p.get("logGroupName", ""), p.get("logStreamName", "")
        return [(f"arn:aws:logs:{region}:{account}:log-group:{group}:log-stream:{stream}", {})]
    if service == "kms":
        key = p.get("KeyId") or p.get("keyId") or ""
        if not key.startswith("arn:"):
            key = f"arn:aws:kms:{region}:{account}:key/{key}"
        return [(key, {})]
    if service == "sqs":
        name = urlparse(p.get("QueueUrl", "")).path.rsplit("/", 1)[-1]
        return [(f"arn:aws:sqs:{region}:{account}:{name}", {})]
    if service == "lambda":  # REST: the function is in the path, /2015-03-31/functions/NAME/...
        name = unquote(str(p.get(PATH, ""))).split("/functions/", 1)[-1].split("/", 1)[0]
        arn = name if name.startswith("arn:") else (
            f"arn:aws:lambda:{region}:{account}:function:{name}")
        return [(arn, {})]
    return [("*", {})]  # ec2 and the rest: no resource scoping in these policies


def _matches(pattern: str | list[str], value: str) -> bool:
    patterns = [pattern] if isinstance(pattern, str) else pattern
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


_OPERATORS: dict[str, Callable[[str, str], bool]] = {
    "StringEquals": lambda want, got: want == got,
    "StringLike": fnmatch.fnmatchcase,
    "ArnEquals": lambda want, got: want == got,
    "ArnLike": lambda want, got: fnmatch.fnmatchcase(got, want),
}


def _conditions_hold(conditions: dict[str, dict[str, Any]], ctx: Context) -> bool:
    for operator, keys in conditions.items():
        check = _OPERATORS[operator]  # an operator these templates do not use: KeyError
        for key, wanted in keys.items():
            got = ctx.get(key)
            wants = [wanted] if isinstance(wanted, str) else wanted
            if got is None or not any(check(str(w), got) for w in wants):
                return False
    return True


def evaluate(statements: list[dict[str, Any]], action: str, resource: str,
             ctx: Context) -> tuple[bool, tuple[str, ...]]:
    allowed: list[str] = []
    for st in statements:
        if not _matches(st["Action"], action) or not _matches(st["Resource"], resource):
            continue
        if not _conditions_hold(st.get("Condition", {}), ctx):
            continue
        if st["Effect"] == "Deny":
            return False, ()
        allowed.append(st.get("Sid", "?"))
    return bool(allowed), tuple(allowed)


def _statements(request: IAMRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for policy in request._access_key.collect_policies():
        doc = policy["policy_document"] if isinstance(policy, dict) else next(
            v.document for v in policy.versions if v.is_default)
        parsed = json.loads(doc) if isinstance(doc, str) else doc
        st = parsed["Statement"]
        out.extend(st if isinstance(st, list) else [st])
    return out


@contextmanager
def enforced(ledger: Ledger) -> Iterator[Ledger]:
    """IAM enforcement with resources and conditions until the block ends."""
    original_check = IAMRequest.check_action_permitted
    original_count = settings.INITIAL_NO_AUTH_ACTION_COUNT

    def check(self: IAMRequest, resource: str) -> None:
        statements = _statements(self)
        principal = getattr(self._access_key, "_owner_user_name", "?")
        service, op = self._action.split(":", 1)
        action = f"{IAM_PREFIX.get(service, service)}:{op}"
        action = IAM_ACTION.get(action, action)
        params = {**_params(self), PATH: self._path}
        for arn, ctx in _grants(action, params, self._region, self.account_id):
            ok, sids = evaluate(statements, action, arn, ctx)
            ledger.decisions.append(Decision(principal, action, arn, ok, sids))
            if not ok:
                self._raise_access_denied()

    IAMRequest.check_action_permitted = check  # type: ignore[method-assign]
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        yield ledger
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = original_count
        IAMRequest.check_action_permitted = original_check  # type: ignore[method-assign]
