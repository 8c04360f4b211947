"""One helper hides the secrets of every URI the platform shows: Redis, MLflow, SQL, S3, Airflow, webhooks."""

from __future__ import annotations

import pytest

from churnops.redaction import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@cache:6380/1", "redis://:***@cache:6380/1"),
        ("redis://user:s3cret@cache/0", "redis://user:***@cache/0"),
        ("rediss://default:s3cret@[::1]:6380/2", "rediss://default:***@[::1]:6380/2"),
        ("http://user:s3cret@mlflow:5000/", "http://user:***@mlflow:5000/"),
        ("postgresql+psycopg2://churn:s3cret@db:5432/scores", "postgresql+psycopg2://churn:***@db:5432/scores"),
        ("http://key:s3cret@minio:9000", "http://key:***@minio:9000"),
        ("http://admin:s3cret@airflow:8080", "http://admin:***@airflow:8080"),
        ("https://hooks.example.com/alert?token=s3cret&team=ops", "https://hooks.example.com/alert?token=***&team=ops"),
        ("https://x.example/h?api_key=s3cret", "https://x.example/h?api_key=***"),
        ("https://b.s3.example/k?X-Amz-Signature=s3cret&X-Amz-Date=1", "https://b.s3.example/k?X-Amz-Signature=***&X-Amz-Date=1"),
        ("http://user:p@ss:word@host/", "http://user:***@host/"),  # the last "@" ends the user information
    ],
)
def test_passwords_and_secret_parameters_are_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://user@cache/0",  # a user name alone is not a secret
        "sqlite:////tmp/scores.db",
        "s3://bucket/prefix",
        "https://hooks.example.com/alert?team=ops&monkey=1",
        "/a/local/path",
        "",
    ],
)
def test_urls_without_a_secret_are_unchanged(url: str) -> None:
    assert redact_url(url) == url


def test_secrets_inside_free_text_are_masked() -> None:
    text = (
        "cannot reach http://user:s3cret@mlflow:5000/api/2.0 (postgresql://u:s3cret@db/x); "
        "webhook https://h.example/x?token=s3cret&a=1 failed; key=value stays"
    )
    shown = redact_text(text)
    assert "s3cret" not in shown
    assert "http://user:***@mlflow:5000/api/2.0" in shown and "postgresql://u:***@db/x" in shown
    assert "?token=***&a=1" in shown and "key=value stays" in shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0001/B0002/XyZs3cret", "https://hooks.slack.com/services/***"),
        ("https://discord.com/api/webhooks/123456/s3cretToken", "https://discord.com/api/***"),
        ("http://hook:s3cret@10.0.0.1:9000/alert?token=s3cret", "http://hook:***@10.0.0.1:9000/alert?token=***"),
        ("https://alerts.example/", "https://alerts.example/"),
    ],
)
def test_webhook_paths_that_carry_the_credential_are_masked(url: str, shown: str) -> None:
    assert redact_url(url, secret_path=True) == shown
    assert "s3cret" not in shown
    assert redact_url("https://mlflow.example/api/2.0/mlflow/runs/abc") == (
        "https://mlflow.example/api/2.0/mlflow/runs/abc")  # only where asked: other paths stay readable


def test_a_registered_webhook_is_masked_where_a_library_quotes_only_its_path(monkeypatch) -> None:
    from churnops import redaction

    monkeypatch.setattr(redaction, "_REGISTERED", {})
    url = "https://hooks.slack.com/services/T0001/B0002/XyZs3cret"
    quoted = ("HTTPSConnectionPool(host='hooks.slack.com', port=443): Max retries exceeded with url: "
              "/services/T0001/B0002/XyZs3cret (Caused by NewConnectionError(...))")
    assert "XyZs3cret" in redact_text(quoted)  # unknown until registered: nothing in it looks like a secret
    redaction.register_secret_url(url)
    assert "XyZs3cret" not in redact_text(quoted)
    assert "url: /services/*** (Caused" in redact_text(quoted)
    assert redact_text(f"POST {url} -> 500") == "POST https://hooks.slack.com/services/*** -> 500"
