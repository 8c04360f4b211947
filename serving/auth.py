"""Bearer-token authentication of the API: one set of tokens for ``/predict``, another for the operator
endpoints (``/model``, ``/metrics``); ``/health``, ``/openapi.json`` and ``/`` stay open.

Tokens come from the environment (secrets never enter ``Settings`` or params.yaml):

    CHURNOPS_PREDICT_TOKENS,  CHURNOPS_PREDICT_TOKENS_FILE     tokens /predict accepts
    CHURNOPS_OPERATOR_TOKENS, CHURNOPS_OPERATOR_TOKENS_FILE    tokens /model and /metrics accept

A variable holds one or more tokens separated by commas or whitespace; a file holds one per line (``#``
starts a comment) and is read again when it changes (checked at most once a second), so tokens rotate
without a restart: add the new token, move the clients, remove the old one. Several tokens are valid at
once.

With none of the four variables set, nothing is required (the demo and tests on localhost); ``churnops
serve`` on any other address then warns at start. Once any is set, every protected endpoint requires a
token of its own kind: none or an unknown one is 401, a valid token of the other kind is 403 (both JSON,
with ``WWW-Authenticate: Bearer``). Tokens are compared as SHA-256 digests in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from churnops.logs import get_logger

log = get_logger(__name__)

PREDICT, OPERATOR = "predict", "operator"
SCOPES = {PREDICT: "CHURNOPS_PREDICT_TOKENS", OPERATOR: "CHURNOPS_OPERATOR_TOKENS"}
PROTECTED = {"/predict": PREDICT, "/model": OPERATOR, "/metrics": OPERATOR}
_SPLIT = re.compile(r"[\s,]+")
MIN_TOKEN_LENGTH = 16


class TokenError(ValueError):
    """A token variable or file is unusable (the message names it)."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def _parse(text: str, where: str) -> list[str]:
    tokens = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        tokens.extend(t for t in _SPLIT.split(line) if t)
    short = [t for t in tokens if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise TokenError(f"{where}: {len(short)} token(s) shorter than {MIN_TOKEN_LENGTH} characters; use "
                         "long random tokens: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return tokens


class TokenSource:
    """The tokens of one scope: the variable's, plus the file's (re-read when it changes)."""

    def __init__(self, scope: str, env: Mapping[str, str]) -> None:
        var = SCOPES[scope]
        self.scope = scope
        self.inline = frozenset(_digest(t) for t in _parse(env.get(var, ""), var))
        file = env.get(var + "_FILE")
        self.path = Path(file) if file else None
        self.configured = bool(env.get(var, "").strip()) or self.path is not None
        self._from_file: frozenset[bytes] = frozenset()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        if self.path is not None:
            if not self.path.is_file():
                raise TokenError(f"{var}_FILE={self.path}: no such file")
            self._reload()

    def _reload(self) -> None:
        assert self.path is not None
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self._from_file = frozenset(_digest(t) for t in _parse(self.path.read_text(), str(self.path)))
                if self._stamp is not None:
                    log.info("auth.tokens_reloaded", scope=self.scope, path=str(self.path),
                             tokens=len(self._from_file))
                self._stamp = stamp
        except (OSError, TokenError) as exc:  # keep the tokens read last; say so once per change
            if self._stamp != (-1, -1):
                log.error("auth.tokens_unreadable", scope=self.scope, path=str(self.path), error=str(exc))
            self._stamp = (-1, -1)

    def digests(self) -> frozenset[bytes]:
        if self.path is not None:
            now = time.monotonic()
            if now - self._checked >= 1.0:
                self._checked = now
                self._reload()
            return self.inline | self._from_file
        return self.inline

    def accepts(self, digest: bytes) -> bool:
        found = False
        for known in self.digests():  # every one compared: the time does not tell which matched
            found |= hmac.compare_digest(known, digest)
        return found


@dataclass(frozen=True)
class Denied:
    status: int  # 401 or 403
    message: str
    challenge: str


class Auth:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.sources = {scope: TokenSource(scope, env) for scope in SCOPES}
        self.enabled = any(s.configured for s in self.sources.values())

    def check(self, path: str, authorization: str | None) -> Denied | None:
        """None when the request may go on; otherwise what to answer."""
        scope = PROTECTED.get(path)
        if scope is None or not self.enabled:
            return None
        var = SCOPES[scope]
        if not authorization:
            return Denied(401, f"{path} needs a bearer token: send the header 'Authorization: Bearer "
                               f"<token>' with a {scope} token ({var})", 'Bearer realm="churnops"')
        kind, _, token = authorization.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token:
            return Denied(401, "the Authorization header must be 'Bearer <token>'",
                          'Bearer realm="churnops", error="invalid_request"')
        digest = _digest(token)
        if self.sources[scope].accepts(digest):
            return None
        other = OPERATOR if scope == PREDICT else PREDICT
        if self.sources[other].accepts(digest):
            return Denied(403, f"this is a {other} token; {path} takes {scope} tokens ({var})",
                          'Bearer realm="churnops", error="insufficient_scope"')
        return Denied(401, "unknown or revoked token", 'Bearer realm="churnops", error="invalid_token"')
