"""Secrets out of what the platform prints, logs and answers: one helper for every URI.

Every address churnops shows a person or another program (Redis, MLflow, the SQL database, S3 endpoints,
Airflow, alert webhooks) goes through :func:`redact_url` first; free text that may quote one (an
exception's message, a log line) goes through :func:`redact_text`. What is hidden:

- the password of the URL's user information (``redis://:s3cret@cache:6380/1`` -> ``redis://:***@cache:6380/1``;
  the user name stays, so an operator can still tell which account is configured);
- the values of query parameters whose names say they are secrets (``token``, ``password``,
  ``X-Amz-Signature``, ``api_key``, ...): ``https://hooks.example/x?token=abc`` -> ``...?token=***``;
- for webhook addresses whose path is itself the credential (Slack's ``/services/T…/B…/<secret>``, Discord's
  ``/api/webhooks/<id>/<token>``): every path segment after the first (``redact_url(url, secret_path=True)``).
  Such an address is registered once (:func:`register_secret_url`, done when alert channels are built) and
  :func:`redact_text` then masks it, or its path alone as HTTP libraries quote it, wherever it appears.

A URL without a secret comes back unchanged, character for character. The log formatters of
:mod:`churnops.logs` pass every line through :func:`redact_text`, so a URL that reaches a log by another
route (a library's exception, say) is masked as well.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# Query parameters whose values are credentials (compared in lower case, "-" read as "_").
_SECRET_PARAMS = re.compile(
    r"^(?:.*_)?(?:password|passwd|pwd|secret|token|key|apikey|signature|sig|credential|credentials|auth)$"
)
# scheme://user:password@  (the password may not contain "@", "/" or white space)
_USERINFO_IN_TEXT = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*):(?P<secret>[^\s@/]+)@")
# ?name=value or &name=value inside a URL in free text
_PARAM_IN_TEXT = re.compile(r"(?P<head>[?&](?P<name>[A-Za-z0-9_.-]+)=)(?P<value>[^&#\s\"'<>]+)")


def _secret_param(name: str) -> bool:
    return bool(_SECRET_PARAMS.match(name.lower().replace("-", "_")))


def _redact_query(query: str) -> str:
    if not query:
        return query
    parts = []
    for pair in query.split("&"):
        name, sep, value = pair.partition("=")
        parts.append(f"{name}={MASK}" if sep and value and _secret_param(name) else pair)
    return "&".join(parts)


def _redact_path(path: str) -> str:
    """The first segment of `path` and ``***`` for the rest (``/services/T1/B2/x`` -> ``/services/***``)."""
    segments = path.split("/")  # "/services/T1/B2/x" -> ["", "services", "T1", "B2", "x"]
    if len(segments) <= 2 or not any(segments[2:]):
        return path
    return "/".join([*segments[:2], MASK])


def redact_url(url: str, *, secret_path: bool = False) -> str:
    """`url` with its password and secret query values replaced by ``***`` (for messages, logs, answers).

    Any URL scheme (``redis``, ``rediss``, ``http(s)``, ``postgresql+psycopg2``, ``s3``, ...); a value that
    is not a URL (a file path, an empty string) comes back as it is. ``secret_path=True`` also masks every
    path segment after the first (webhook addresses that carry their credential in the path).
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable as a URL: mask whatever looks like user:password@ in it
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            netloc = f"{user}:{MASK}@{host}"
    query = _redact_query(parts.query)
    path = _redact_path(parts.path) if secret_path else parts.path
    if netloc == parts.netloc and query == parts.query and path == parts.path:
        return url
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


# Secret texts registered by register_secret_url -> what is shown instead (longest first when applied).
_REGISTERED: dict[str, str] = {}


def register_secret_url(url: str) -> None:
    """Mask `url` (and its path and query, as HTTP libraries quote them) in every later :func:`redact_text`.

    For addresses whose path is the credential (webhooks): the log formatters then hide it even where a
    library's message or a debug log line quotes it without its scheme and host.
    """
    if "://" not in url:
        return
    shown = redact_url(url, secret_path=True)
    if shown == url:
        return
    _REGISTERED[url] = shown
    try:
        parts, shown_parts = urlsplit(url), urlsplit(shown)
    except ValueError:
        return
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    shown_tail = shown_parts.path + (f"?{shown_parts.query}" if shown_parts.query else "")
    if tail != shown_tail and len(tail) > 1:
        _REGISTERED[tail] = shown_tail


def redact_text(text: str) -> str:
    """`text` with every ``scheme://user:password@``, secret query value and registered secret URL masked."""
    for secret in sorted(_REGISTERED, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, _REGISTERED[secret])
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO_IN_TEXT.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _PARAM_IN_TEXT.sub(
        lambda m: f"{m['head']}{MASK}" if _secret_param(m["name"]) else m.group(0), text
    )
