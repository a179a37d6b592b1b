"""Broker URLs: redaction for logs and errors, and a parse check that never echoes a password.

Core module: standard library only, so the health check, the locks and the checkpoint stores can
redact a URL without loading the config file machinery.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from toolkit.errors import ConfigError

_SECRET_PARAM = re.compile(
    r"([?&;](?:password|passwd|pass|pwd|token|secret|auth|sasl_password|api_key)=)[^&;#]*",
    re.IGNORECASE,
)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (safe for logs and errors).

    Works on the text rather than on a parse, because a password with an unencoded ``#``, ``/``,
    ``?`` or ``@`` defeats URL parsers: everything between ``scheme://user:`` and the last ``@``
    is masked. Errs towards masking too much.
    """
    url = _SECRET_PARAM.sub(r"\1***", url)  # redis-py also takes ?password=...
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "<URL with credentials>"
    at = rest.rfind("@")
    if at == -1:
        return url
    creds, host = rest[:at], rest[at + 1:]
    user, colon, _ = creds.partition(":")
    if not colon:  # `scheme://secret@host`: a bare token may be a password; hide it
        return f"{scheme}://***@{host}"
    return f"{scheme}://{user}:***@{host}"


def url_scheme(url: str) -> str:
    """The lower-cased scheme of ``url``, or "" when it has none or cannot be parsed."""
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def check_broker_url(url: str) -> None:
    """Refuse a URL that cannot be parsed, with a one-line error that does not echo the password."""
    # the parser's own messages quote the text it choked on, which can be part of a password
    # with an unencoded '/', '?' or '#': give fixed reasons only
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ConfigError(f"malformed broker URL {redact_url(url)}: cannot be parsed") from None
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ConfigError(
            f"malformed broker URL {redact_url(url)}: the port is not a number (a password "
            "with '/', '?' or '#' must be percent-encoded)"
        ) from None
    if not parts.scheme or "://" not in url:
        raise ConfigError(f"malformed broker URL {redact_url(url)}: expected scheme://host")
    if parts.scheme.lower() in {"redis", "rediss"}:
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigError(
                f"malformed broker URL {redact_url(url)}: the Redis database must be a number, "
                f"got {db!r}"
            )
