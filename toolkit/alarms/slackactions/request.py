"""A Slack interactivity request as a Lambda function URL delivers it, and its signature.

Function URLs deliver payload format 2.0: ``requestContext.http.method``, lower-case
``headers``, the ``body`` as a string, base64-encoded when ``isBase64Encoded`` (Slack's form
posts often are). :meth:`HttpRequest.from_event` gives the raw bytes as Slack sent them, which is
what the signature covers.

:func:`check_signature` is Slack's scheme through ``slack_sdk``'s
:class:`~slack_sdk.signature.SignatureVerifier`: ``v0=HMAC-SHA256(secret, "v0:<ts>:<body>")`` in
``X-Slack-Signature``, with ``X-Slack-Request-Timestamp`` no more than 5 minutes from now. It
says why a request is refused (:data:`Refusal`) without ever echoing the body or the headers:
the caller answers 401 and logs the reason and the body's length only.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["MAX_AGE_SECONDS", "HttpRequest", "Refusal", "check_signature", "http_response"]

MAX_AGE_SECONDS = 300  # Slack's replay window: 5 minutes either side
MAX_BODY = 64 * 1024  # an interactivity payload is a few KB; anything larger is not Slack's
Refusal = Literal["unsigned", "stale", "bad-signature", "no-secret", "too-large", "not-post"]
SIGNATURE = "x-slack-signature"
TIMESTAMP = "x-slack-request-timestamp"


@dataclass(frozen=True)
class HttpRequest:
    """One function URL request: method, headers (lower-case names) and the raw body."""

    method: str
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    request_id: str = ""

    @classmethod
    def from_event(cls, event: object) -> HttpRequest | None:
        """The request of a function URL event (payload 2.0), ``None`` for any other event."""
        if not isinstance(event, dict):
            return None
        context = event.get("requestContext")
        http = context.get("http") if isinstance(context, dict) else None
        if not isinstance(http, dict):
            return None
        raw_headers = event.get("headers")
        headers = {str(k).lower(): v for k, v in (raw_headers or {}).items()
                   if isinstance(v, str)} if isinstance(raw_headers, dict) else {}
        raw = event.get("body")
        text = raw if isinstance(raw, str) else ""
        body = b""
        if event.get("isBase64Encoded"):
            try:
                body = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                body = b"\x00"  # not base64: no signature can match it
        else:
            body = text.encode("utf-8", "surrogatepass")
        request_id = context.get("requestId") if isinstance(context, dict) else None
        return cls(str(http.get("method") or "").upper(), headers, body,
                   request_id if isinstance(request_id, str) else "")

    @property
    def signed(self) -> bool:
        return bool(self.headers.get(SIGNATURE)) and bool(self.headers.get(TIMESTAMP))


def check_signature(
    request: HttpRequest, signing_secret: Callable[[], str | None], now: float
) -> Refusal | None:
    """``None`` when Slack signed ``request`` within the last 5 minutes, else why not.
    ``signing_secret`` is called only for a signed, fresh request (an unsigned one never costs
    a Secrets Manager read); what it raises passes through."""
    if request.method != "POST":
        return "not-post"
    if len(request.body) > MAX_BODY:
        return "too-large"
    if not request.signed:
        return "unsigned"
    stamp = request.headers[TIMESTAMP]
    if not stamp.isdigit() or abs(now - int(stamp)) > MAX_AGE_SECONDS:
        return "stale"
    secret = signing_secret()
    if not secret or not secret.strip():
        return "no-secret"
    from slack_sdk.signature import Clock, SignatureVerifier

    at = now

    class At(Clock):  # the caller's clock (a test's, the sandbox's), not time.time()
        def now(self) -> float:
            return at

    verifier = SignatureVerifier(secret, clock=At())
    try:
        valid = verifier.is_valid(request.body, stamp, request.headers[SIGNATURE])
    except (UnicodeDecodeError, ValueError):
        valid = False
    return None if valid else "bad-signature"


def http_response(status: int, body: str = "",
                  content_type: str = "text/plain; charset=utf-8") -> dict[str, Any]:
    """A function URL response (payload 2.0)."""
    return {"statusCode": status, "headers": {"Content-Type": content_type}, "body": body}
