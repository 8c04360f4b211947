"""Structured logging: one event name plus key=value fields, as text for people or JSON lines for machines.

Nothing is configured at import. Entry points (the CLI, gunicorn) call :func:`configure_logging` once;
library code only calls :func:`get_logger`. Airflow configures its own task logs: the project's DAGs take
:func:`task_default_args`, whose callback (:func:`task_logging`) makes the key=value fields visible there.
Every line the formatters write passes :func:`churnops.redaction.redact_text`, so a URL with a password
in a field or in an exception's message is masked.

    log = get_logger(__name__)
    log.info("candidate.trained", model="xgboost", roc_auc=0.991)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

from churnops.redaction import redact_text

T = TypeVar("T")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class EventLogger(logging.LoggerAdapter):
    """`log.info("event", key=value, ...)`: keyword arguments become structured fields."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        std = {k: kwargs.pop(k) for k in ("exc_info", "stack_info", "stacklevel") if k in kwargs}
        extra = kwargs.pop("extra", None)
        if isinstance(extra, dict):
            fields = {**extra, **kwargs}
        else:  # a field that happens to be called "extra"
            fields = {**kwargs, **({"extra": extra} if extra is not None else {})}
        return msg, {**std, "extra": {"fields": fields}}


def get_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(name), {})


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = dict(getattr(record, "fields", {}) or {})
    fields.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED and k != "fields"})
    return fields


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        parts = [f"{ts} {record.levelname:<7} {record.getMessage()}"]
        parts += [f"{k}={_render(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact_text(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(doc, default=str))


def _render(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return json.dumps(text) if (" " in text or not text) else text


class _FieldsInMessage(logging.Filter):
    """churnops logs an event name plus key=value fields (`extra`); Airflow's task-log handler drops
    `extra`, so this renders the fields into the message itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = getattr(record, "fields", None)
        if fields and not getattr(record, "_churnops_inlined", False):
            rendered = " ".join(f"{k}={_render(v)}" for k, v in fields.items())
            record.msg = redact_text(f"{record.msg} {rendered}")
            record._churnops_inlined = True
        return True


def task_logging(context: Any = None) -> None:
    """Make churnops' structured fields visible in an Airflow task's log (idempotent).

    Takes (and ignores) the task context, so it serves as the tasks' ``on_execute_callback`` as it is.
    """
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, _FieldsInMessage) for f in handler.filters):
            handler.addFilter(_FieldsInMessage())


def task_default_args(
    *, retries: int, retry_delay: timedelta, execution_timeout: timedelta
) -> dict[str, Any]:
    """The ``default_args`` of every churnops DAG: the owner, task logging before each task, and the DAG's
    own retry policy and timeout (plain values: no Airflow import)."""
    return {
        "owner": "ml-platform",
        "on_execute_callback": task_logging,
        "retries": retries,
        "retry_delay": retry_delay,
        "execution_timeout": execution_timeout,
    }


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Log to stderr; CHURNOPS_LOG_LEVEL and CHURNOPS_LOG_FORMAT (text|json) override the defaults."""
    level = (level or os.environ.get("CHURNOPS_LOG_LEVEL") or "INFO").upper()
    fmt = fmt or os.environ.get("CHURNOPS_LOG_FORMAT") or "text"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("urllib3", "botocore", "alembic", "mlflow", "git", "matplotlib", "numba", "filelock"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def progress(items: Iterable[T], *, task: str, total: int | None = None, every_s: float = 5.0,
             cost: Callable[[T], float] | None = None, total_cost: float | None = None,
             fields: Callable[[T], dict[str, Any]] | None = None) -> Iterator[T]:
    """Yield from `items`, logging `task` progress at most every `every_s` seconds (and at the last item).

    Each line says done/total, elapsed_s and eta_s (the remaining share of the work at the rate so far).
    Items of unequal size: `cost(item)` (e.g. rows fitted) and `total_cost` weigh the estimate; `fields(item)`
    adds what the item is (candidate, round, setting i of n, ...) to the line.
    """
    log = get_logger("churnops.progress")
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    start = last = time.monotonic()
    done, done_cost = 0, 0.0
    for item in items:
        yield item
        done += 1
        done_cost += cost(item) if cost is not None else 1.0
        now = time.monotonic()
        if now - last >= every_s or done == total:
            last = now
            elapsed = now - start
            whole = total_cost if cost is not None else total
            eta = None if not whole or done_cost <= 0 else max(0.0, elapsed * (whole - done_cost) / done_cost)
            log.info("progress", task=task, done=done, total=total, elapsed_s=round(elapsed, 1),
                     eta_s=None if eta is None else round(eta, 1), **(fields(item) if fields else {}))
