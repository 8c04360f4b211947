"""Secrets out of what the platform prints, logs and answers: one helper for every URI.

Every address churnops shows a person or another program (Redis, MLflow, the SQL database, S3 endpoints,
Airflow, alert webhooks) goes through :func:`redact_url` first; free text that may quote one (an
exception's message, a log line) goes through :func:`redact_text`. What is hidden:

- the password of the URL's user information (``redis://:s3cret@cache:6380/1`` -> ``redis://:***@cache:6380/1``;
  the user name stays, so an operator can still tell which account is configured);
- the values of query parameters whose names say they are secrets (``token``, ``password``,
  ``X-Amz-Signature``, ``api_key``, ...): ``https://hooks.example/x?token=abc`` -> ``...?token=***``.

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


def redact_url(url: str) -> str:
    """`url` with its password and secret query values replaced by ``***`` (for messages, logs, answers).

    Any URL scheme (``redis``, ``rediss``, ``http(s)``, ``postgresql+psycopg2``, ``s3``, ...); a value that
    is not a URL (a file path, an empty string) comes back as it is.
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
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """`text` with every ``scheme://user:password@`` and secret query value in it masked (see module doc)."""
    if "://" not in text and "=" not in text:
        return text
    text = _USERINFO_IN_TEXT.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _PARAM_IN_TEXT.sub(
        lambda m: f"{m['head']}{MASK}" if _secret_param(m["name"]) else m.group(0), text
    )
