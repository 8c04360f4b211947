"""Alerts to on-call: channels, duplicate suppression, retries with backoff, and a durable outbox.

Flow: :meth:`Alerter.raise_alert` records the alert and one delivery per configured channel in the outbox
(SQLite, :mod:`monitoring.state`) in one transaction, unless the same alert (same fingerprint) was raised
within the cooldown, then :meth:`Alerter.deliver_pending` sends what is due. A channel whose URL variable is
unset when the alert is raised gets its delivery all the same: it waits (``drift outbox`` says "channel not
configured now") and goes out from the first run that finds the URL set. A delivery is claimed under a
lease (so two processes never send the same one), retried ``attempts`` times with exponential backoff,
and on failure waits in the outbox with a persisted, growing delay until a later run (the next check, or
``churnops drift deliver``) gets it through. It is marked delivered in the same process that got the 2xx,
so it is never sent again. Every request carries the alert's ``Idempotency-Key``: should a process die
between the receiver's 2xx and the commit, the one resend that follows can be recognised by the receiver.

Channels (``monitoring.alerts.channels``): ``log`` (a structured warning line), ``webhook`` (the alert as
JSON), ``slack`` (an incoming-webhook message), ``alertmanager`` (POST ``<url>/api/v2/alerts`` with a list
of one alert). HTTP channels read their URL from the environment variable named by ``url_env``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from churnops.logs import get_logger
from churnops.redaction import redact_text, redact_url, register_secret_url
from monitoring.state import StateDB

log = get_logger(__name__)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True)
class Alert:
    kind: str
    title: str
    summary: str
    fingerprint: str
    details: dict[str, Any] = field(default_factory=dict)
    severity: str = "warning"
    report: str | None = None  # where the full report is (path or URL)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the idempotency key
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def drift_alert(result: Any, report: str | None = None) -> Alert:
    """The alert for a drift result: same reference version and same drifted features = same alert."""
    summary = result.summary()
    effects = "; ".join(summary["changes"])
    return Alert(
        kind="drift",
        title=f"churnops: input drift in {len(result.drifted_features)} feature(s) "
              f"against model version {result.reference_version or '-'}",
        summary=f"{result.message}. {effects} (window of {result.window_size} rows).",
        fingerprint=fingerprint("drift", result.reference_version, sorted(result.drifted_features)),
        details=summary,
        report=report,
    )


# -- payloads ------------------------------------------------------------------------------------

def webhook_payload(alert: Alert) -> Any:
    return {**alert.to_dict(), "idempotency_key": alert.id, "created_at_iso": _iso(alert.created_at),
            "source": "churnops"}


def slack_payload(alert: Alert) -> Any:
    feats = ", ".join(alert.details.get("drifted_features", [])) or "-"
    return {
        "text": f":warning: {alert.title}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
            {"type": "section", "text": {"type": "mrkdwn", "text": alert.summary}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Features*\n{feats}"},
                {"type": "mrkdwn", "text": f"*Severity*\n{alert.severity}"},
            ]},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"report: {alert.report or '-'} | alert id {alert.id}"}]},
        ],
    }


def alertmanager_payload(alert: Alert) -> Any:
    return [{
        "labels": {"alertname": f"Churnops{alert.kind.title()}", "severity": alert.severity,
                   "service": "churnops",
                   "reference_version": str(alert.details.get("reference_version") or "")},
        "annotations": {"summary": alert.title, "description": alert.summary,
                        "drifted_features": ",".join(alert.details.get("drifted_features", [])),
                        "report": alert.report or "", "idempotency_key": alert.id},
        "startsAt": _iso(alert.created_at),
    }]


PAYLOADS: dict[str, Callable[[Alert], Any]] = {
    "log": webhook_payload, "webhook": webhook_payload, "slack": slack_payload,
    "alertmanager": alertmanager_payload,
}


# -- channels ------------------------------------------------------------------------------------

class DeliveryError(RuntimeError):
    pass


# Channel types whose URL may carry its credential in the path (Slack /services/T/B/<secret>, generic webhooks).
SECRET_PATH_TYPES = frozenset({"webhook", "slack"})


@dataclass(frozen=True)
class Channel:
    name: str
    type: str
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 5.0

    def endpoint(self) -> str | None:
        if self.type == "alertmanager" and self.url:
            return self.url.rstrip("/") + "/api/v2/alerts"
        return self.url

    def send(self, alert_id: str, payload: str) -> None:
        if self.type == "log":
            doc = json.loads(payload)
            log.warning("alert", alert_id=alert_id, title=doc.get("title"), summary=doc.get("summary"),
                        report=doc.get("report"))
            return
        import requests

        headers = {"Content-Type": "application/json", "Idempotency-Key": alert_id,
                   "X-Churnops-Alert-Id": alert_id, **self.headers}
        try:
            resp = requests.post(self.endpoint(), data=payload.encode(), headers=headers,
                                 timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise DeliveryError(redact_text(f"{self.name}: {type(exc).__name__}: {exc}")) from exc
        if not 200 <= resp.status_code < 300:
            where = redact_url(self.endpoint() or "", secret_path=self.type in SECRET_PATH_TYPES)
            raise DeliveryError(f"{self.name}: HTTP {resp.status_code} from {where}: {resp.text[:200]}")


def build_channels(alerts_settings: Any, env: Mapping[str, str] | None = None
                   ) -> tuple[dict[str, Channel], dict[str, str]]:
    """Active channels by name, and the skipped ones with the reason."""
    env = os.environ if env is None else env
    active: dict[str, Channel] = {}
    skipped: dict[str, str] = {}
    for c in alerts_settings.channels:
        if c.type == "log":
            active[c.name] = Channel(c.name, c.type, timeout_s=alerts_settings.timeout_s)
            continue
        url = env.get(c.url_env or "")
        if not url:
            skipped[c.name] = f"set {c.url_env} to enable it"
            continue
        if c.type in SECRET_PATH_TYPES:
            register_secret_url(url)  # its path may be the credential: masked in every message and log line
        active[c.name] = Channel(c.name, c.type, url, dict(c.headers), alerts_settings.timeout_s)
    return active, skipped


# -- the outbox and its dispatcher ---------------------------------------------------------------

@dataclass(frozen=True)
class RaiseResult:
    alert_id: str
    accepted: bool  # False: a duplicate within the cooldown (suppressed)
    duplicate_of: str | None = None
    channels: list[str] = field(default_factory=list)  # active now: delivered from this run on
    waiting: list[str] = field(default_factory=list)  # configured without a URL: sent once it is set


@dataclass
class DeliveryReport:
    delivered: list[tuple[str, str]] = field(default_factory=list)  # (alert_id, channel)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (alert_id, channel, error)
    pending: int = 0  # still waiting in the outbox for an active channel after this run
    in_flight: int = 0  # being sent right now by another process (it holds their lease)
    unconfigured: dict[str, int] = field(default_factory=dict)  # channel without a URL now -> waiting

    def to_dict(self) -> dict[str, Any]:
        return {"delivered": len(self.delivered), "failed": [list(f) for f in self.failed],
                "pending": self.pending, "in_flight": self.in_flight, "unconfigured": dict(self.unconfigured)}


class Alerter:
    def __init__(self, state: StateDB, alerts_settings: Any, *, env: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.state = state
        self.settings = alerts_settings
        self.channels, self.skipped = build_channels(alerts_settings, env)
        self.configured = {c.name: c.type for c in alerts_settings.channels}
        self.clock, self.sleep = clock, sleep
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for name, why in self.skipped.items():
            log.warning("alert.channel_skipped", channel=name, reason=why)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> Alerter:
        m = settings.params.monitoring
        return cls(StateDB(settings.path(m.state_db)), m.alerts, **kwargs)

    # -- enqueue ---------------------------------------------------------------------------------
    def raise_alert(self, alert: Alert, deliver: bool = True) -> tuple[RaiseResult, DeliveryReport | None]:
        result = self.enqueue(alert)
        report = self.deliver_pending() if deliver else None
        return result, report

    def enqueue(self, alert: Alert) -> RaiseResult:
        now = self.clock()
        with self.state.transaction() as db:
            row = db.execute(
                "SELECT id FROM alerts WHERE fingerprint = ? AND created_at > ? "
                "ORDER BY created_at DESC LIMIT 1",
                (alert.fingerprint, now - self.settings.cooldown_s)).fetchone()
            if row is not None:
                db.execute("UPDATE alerts SET suppressed = suppressed + 1 WHERE id = ?", (row["id"],))
                log.info("alert.suppressed", fingerprint=alert.fingerprint, duplicate_of=row["id"],
                         cooldown_s=self.settings.cooldown_s)
                return RaiseResult(alert.id, False, row["id"])
            db.execute("INSERT INTO alerts (id, fingerprint, kind, title, created_at, body) "
                       "VALUES (?,?,?,?,?,?)",
                       (alert.id, alert.fingerprint, alert.kind, alert.title, now,
                        json.dumps(alert.to_dict(), default=str)))
            for name, kind in self.configured.items():  # active or not: a URL set later still gets it
                payload = json.dumps(PAYLOADS[kind](alert), default=str)
                db.execute("INSERT INTO deliveries (alert_id, channel, channel_type, payload, status, "
                           "next_attempt_at) VALUES (?,?,?,?, 'pending', ?)",
                           (alert.id, name, kind, payload, now))
        waiting = [name for name in self.configured if name not in self.channels]
        log.info("alert.enqueued", alert_id=alert.id, channels=list(self.channels), waiting=waiting,
                 title=alert.title)
        return RaiseResult(alert.id, True, None, list(self.channels), waiting)

    # -- deliver ---------------------------------------------------------------------------------
    def _claim(self, now: float, lease_s: float) -> list[dict[str, Any]]:
        with self.state.transaction() as db:
            rows = db.execute(
                "SELECT alert_id, channel, channel_type, payload, attempts FROM deliveries "
                "WHERE status = 'pending' AND next_attempt_at <= ? "
                "AND (lease_until IS NULL OR lease_until < ?) "
                "ORDER BY next_attempt_at", (now, now)).fetchall()
            rows = [dict(r) for r in rows if r["channel"] in self.channels]
            for r in rows:
                db.execute("UPDATE deliveries SET lease_owner = ?, lease_until = ? "
                           "WHERE alert_id = ? AND channel = ?",
                           (self.owner, now + lease_s, r["alert_id"], r["channel"]))
        return rows

    def deliver_pending(self) -> DeliveryReport:
        """Send every due delivery once (with in-run retries); what fails waits for a later run."""
        s = self.settings
        in_run = sum(s.backoff_s * 2 ** k for k in range(s.attempts - 1))
        lease_s = s.attempts * s.timeout_s + in_run + 30.0
        report = DeliveryReport()
        for row in self._claim(self.clock(), lease_s):
            channel = self.channels[row["channel"]]
            error = None
            attempts = 0
            for k in range(s.attempts):
                attempts += 1
                try:
                    channel.send(row["alert_id"], row["payload"])
                    error = None
                    break
                except DeliveryError as exc:
                    error = str(exc)
                    log.warning("alert.delivery_failed", alert_id=row["alert_id"], channel=channel.name,
                                attempt=row["attempts"] + attempts, error=error)
                    if k + 1 < s.attempts:
                        self.sleep(s.backoff_s * 2 ** k)
            self._finish(row, attempts, error)
            if error is None:
                report.delivered.append((row["alert_id"], channel.name))
                log.info("alert.delivered", alert_id=row["alert_id"], channel=channel.name)
            else:
                report.failed.append((row["alert_id"], channel.name, error))
        report.pending, report.in_flight, report.unconfigured = self._outstanding()
        return report

    def _finish(self, row: dict[str, Any], attempts: int, error: str | None) -> None:
        now = self.clock()
        total = row["attempts"] + attempts
        with self.state.transaction() as db:
            if error is None:
                db.execute("UPDATE deliveries SET status = 'delivered', attempts = ?, delivered_at = ?, "
                           "last_error = NULL, lease_owner = NULL, lease_until = NULL "
                           "WHERE alert_id = ? AND channel = ? AND lease_owner = ?",
                           (total, now, row["alert_id"], row["channel"], self.owner))
            else:
                delay = min(self.settings.max_backoff_s, self.settings.backoff_s * 2 ** total)
                db.execute("UPDATE deliveries SET attempts = ?, last_error = ?, next_attempt_at = ?, "
                           "lease_owner = NULL, lease_until = NULL WHERE alert_id = ? AND channel = ? "
                           "AND lease_owner = ?", (total, error, now + delay, row["alert_id"], row["channel"],
                                                   self.owner))

    # -- inspection ------------------------------------------------------------------------------
    def count_pending(self) -> int:
        """Deliveries waiting for an active channel and not being sent by another process right now."""
        return self._outstanding()[0]

    def _outstanding(self) -> tuple[int, int, dict[str, int]]:
        """(waiting for an active channel, leased by another live process, channel without a URL -> count)."""
        with self.state.read() as db:
            rows = db.execute(
                "SELECT channel, (lease_until IS NOT NULL AND lease_until >= ? AND lease_owner != ?) "
                "AS elsewhere, COUNT(*) AS n FROM deliveries WHERE status = 'pending' "
                "GROUP BY channel, elsewhere", (self.clock(), self.owner)).fetchall()
        pending = in_flight = 0
        unconfigured: dict[str, int] = {}
        for r in rows:
            if r["channel"] not in self.channels:
                unconfigured[r["channel"]] = unconfigured.get(r["channel"], 0) + int(r["n"])
            elif r["elsewhere"]:
                in_flight += int(r["n"])
            else:
                pending += int(r["n"])
        return pending, in_flight, unconfigured

    def outbox(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return list_outbox(self.state, status, limit, set(self.channels))


def list_outbox(state: StateDB, status: str | None = None, limit: int = 50,
                active_channels: set[str] | None = None) -> list[dict[str, Any]]:
    """Deliveries, newest alert first, with the alert's title and suppressed-duplicate count."""
    query = ("SELECT d.alert_id, d.channel, d.channel_type, d.status, d.attempts, d.next_attempt_at, "
             "d.last_error, d.delivered_at, a.title, a.created_at, a.suppressed, a.fingerprint "
             "FROM deliveries d JOIN alerts a ON a.id = d.alert_id")
    args: tuple[Any, ...] = ()
    if status:
        query += " WHERE d.status = ?"
        args = (status,)
    query += " ORDER BY a.created_at DESC, d.channel LIMIT ?"
    with state.read() as db:
        rows = [dict(r) for r in db.execute(query, (*args, limit)).fetchall()]
    if active_channels is not None:
        for r in rows:
            r["channel_active"] = r["channel"] in active_channels
    return rows
