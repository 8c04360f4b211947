"""The real server probed from outside as an attacker would (issue 17): slow clients, malformed HTTP over
raw sockets, bodies that stop half-way, tokens, content types, absurd ids. Every answer is the service's
JSON error shape, no worker is ever killed, and the server keeps answering everyone else."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from benchmarks.bench_serving import SlowClients
from tests.serving.conftest import LiveServer, free_port, running

PREDICT_TOKEN = "predict-token-0123456789abcdef"
PREDICT_TOKEN_2 = "predict-token-2-fedcba9876543210"
OPERATOR_TOKEN = "operator-token-0123456789abcdef"


# -- raw HTTP ---------------------------------------------------------------------------------------
Response = tuple[int | None, dict[str, str], bytes]


def connect(server: LiveServer, timeout_s: float = 10.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s)


def read_response(sock: socket.socket, timeout_s: float = 10.0) -> Response:
    """(status, headers, body) of one response; status None when the server closed without answering."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if not data:
                return None, {}, b""
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def raw(server: LiveServer, payload: bytes, timeout_s: float = 10.0) -> Response:
    with connect(server, timeout_s) as sock:
        sock.sendall(payload)
        return read_response(sock, timeout_s)


def bearer(token: str) -> str:
    return f"Authorization: Bearer {token}"


def assert_json_error(status: int | None, headers: dict[str, str], body: bytes, expected: int) -> str:
    assert status == expected, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(body)
    assert isinstance(doc, dict) and isinstance(doc["error"], str) and doc["error"], doc
    assert b"<html" not in body.lower()
    return doc["error"]


def worker_timeouts(server: LiveServer) -> int:
    return server.log_path.read_text(errors="replace").count("WORKER TIMEOUT")


# -- slow clients -----------------------------------------------------------------------------------
def test_two_hundred_slow_clients_do_not_stall_other_clients_or_kill_workers(
        live_server: LiveServer, example_body: dict[str, Any]) -> None:
    children = live_server.children()
    timeouts = worker_timeouts(live_server)
    with SlowClients("127.0.0.1", live_server.port, 200):
        time.sleep(2)  # every slow connection is open and trickling
        answered = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            health = requests.get(live_server.url + "/health", timeout=5)
            predict = requests.post(live_server.url + "/predict", json=example_body, timeout=5)
            answered.append((health.status_code, predict.status_code))
    assert len(answered) >= 5 and set(answered) == {(200, 200)}
    assert live_server.children() == children  # no worker was killed and replaced
    assert worker_timeouts(live_server) == timeouts


# -- protocol errors --------------------------------------------------------------------------------
CHUNKED_HEAD = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")


@pytest.mark.parametrize("payload, status", [
    (CHUNKED_HEAD + b"zz\r\n{}\r\n0\r\n\r\n", 400),  # invalid chunk size
    (b"NOT A REQUEST\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
     b"Content-Length: 9999999\r\n\r\n", 413),
], ids=["invalid-chunk-size", "garbage-request-line", "header-too-large", "uri-too-long", "body-too-large"])
def test_protocol_errors_answer_the_json_error_shape(live_server: LiveServer, payload: bytes,
                                                     status: int) -> None:
    assert_json_error(*raw(live_server, payload), status)
    assert requests.get(live_server.url + "/health", timeout=10).status_code == 200


def cut_off_body_is_dropped(server: LiveServer, timeout_s: float, token: str | None = None) -> None:
    """A chunked body that stops half-way is answered 408 or disconnected within the read timeout (plus
    slack for a loaded machine), long before gunicorn's worker timeout (30 s) would kill a worker."""
    children = server.children()
    timeouts = worker_timeouts(server)
    with connect(server, 60) as sock:
        head = CHUNKED_HEAD.replace(b"Host: x\r\n", f"Host: x\r\n{bearer(token)}\r\n".encode()) \
            if token else CHUNKED_HEAD
        sock.sendall(head + b"40\r\n{\"customer_id\": ")
        started = time.monotonic()
        status, headers, body = read_response(sock, 60)
        waited = time.monotonic() - started
    assert waited < timeout_s + 12, waited
    if status is not None:
        assert_json_error(status, headers, body, 408)
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    assert server.children() == children and worker_timeouts(server) == timeouts


def test_a_chunked_body_that_stops_half_way_is_dropped_without_killing_a_worker(
        live_server: LiveServer, model_store: Any) -> None:
    cut_off_body_is_dropped(live_server, model_store.settings.params.serving.client_timeout_s)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_predict_takes_only_json_bodies(live_server: LiveServer, example_body: dict[str, Any],
                                        content_type: str | None) -> None:
    """A page on another site can post a form or text/plain without a preflight: refused before reading."""
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(live_server.url + "/predict", data=json.dumps(example_body), headers=headers,
                             timeout=10)
    assert response.status_code == 415 and "application/json" in response.json()["error"]
    ok = requests.post(live_server.url + "/predict", data=json.dumps(example_body), timeout=10,
                       headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


@pytest.mark.parametrize("digits", [25, 4300, 5000])
def test_an_absurdly_long_integer_customer_id_is_a_422_in_the_projects_words(
        live_server: LiveServer, digits: int) -> None:
    body = b'{"customer_id": ' + b"7" * digits + b"}"
    response = requests.post(live_server.url + "/predict", data=body, timeout=10,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    [error] = response.json()
    assert error["field"] == "customer_id" and "below 2^64" in error["problem"]
    assert len(response.content) < 400  # the id is not echoed
    assert "Exceeds the limit" not in response.text and "int_max_str_digits" not in response.text


def test_model_says_when_each_worker_last_checked_for_a_champion(live_server: LiveServer) -> None:
    interval = 0.25
    started = time.time()
    time.sleep(interval * 4)
    doc = requests.get(live_server.url + "/model", timeout=10).json()
    assert doc["reload_interval_s"] == interval
    workers = doc["workers"]
    assert len(workers) == 2 and {w["pid"] for w in workers} <= live_server.children()
    for worker in workers:
        assert worker["last_checked_at"] >= started  # every worker checked since
    assert doc["last_checked_at"] >= started
    assert 0 < doc["load_s"] < 300  # how long this worker took to load what it serves (the swap bound's term)
    logged = live_server.log_path.read_text(errors="replace")  # the whole log: loading is at its start
    assert f"load_s={doc['load_s']:.3f}".rstrip("0") in logged  # the same figure, logged


# -- gunicorn answering directly (--front none) and tokens ------------------------------------------
@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "operator-tokens"
    path.write_text(f"# operators\n{OPERATOR_TOKEN}\n")
    return path


@pytest.fixture(scope="module")
def direct_server(model_store: Any, pushed: str, token_file: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Any:
    """gunicorn without the nginx front, with prediction tokens in a variable (two at once) and operator
    tokens in a file."""
    env = {**model_store.env, "CHURNOPS_PREDICT_TOKENS": f"{PREDICT_TOKEN}, {PREDICT_TOKEN_2}",
           "CHURNOPS_OPERATOR_TOKENS_FILE": str(token_file)}
    server = LiveServer(model_store, tmp_path_factory.mktemp("direct") / "serve.log", env=env,
                        args=("--front", "none"))
    server.headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    with running(server):
        yield server


@pytest.mark.parametrize("payload, status", [
    (CHUNKED_HEAD + b"zz\r\n{}\r\n0\r\n\r\n", 400),
    (b"NOT A REQUEST\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
], ids=["invalid-chunk-size", "garbage-request-line", "header-too-large"])
def test_gunicorn_alone_also_answers_protocol_errors_in_json(direct_server: LiveServer, payload: bytes,
                                                             status: int) -> None:
    if b"chunked" in payload:
        payload = payload.replace(b"Host: x\r\n", f"Host: x\r\n{bearer(PREDICT_TOKEN)}\r\n".encode())
    assert_json_error(*raw(direct_server, payload), status)


def test_gunicorn_alone_drops_a_cut_off_body_without_killing_a_worker(direct_server: LiveServer,
                                                                        model_store: Any) -> None:
    timeout_s = model_store.settings.params.serving.client_timeout_s
    cut_off_body_is_dropped(direct_server, timeout_s, PREDICT_TOKEN)


def test_tokens_guard_predict_and_the_operator_endpoints_separately(direct_server: LiveServer,
                                                                    example_body: dict[str, Any]) -> None:
    url = direct_server.url

    def call(method: str, path: str, token: str | None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.request(method, url + path, json=example_body if method == "POST" else None,
                                headers=headers, timeout=10)

    for path, method in (("/predict", "POST"), ("/model", "GET"), ("/metrics", "GET")):
        for token in (None, "not-a-real-token-at-all-0000"):
            response = call(method, path, token)
            assert response.status_code == 401 and response.json()["error"], (path, token)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert call("POST", "/predict", PREDICT_TOKEN).status_code == 200
    assert call("POST", "/predict", PREDICT_TOKEN_2).status_code == 200  # several at once (rotation)
    assert call("POST", "/predict", OPERATOR_TOKEN).status_code == 403
    for path in ("/model", "/metrics"):
        assert call("GET", path, PREDICT_TOKEN).status_code == 403
        assert "predict token" in call("GET", path, PREDICT_TOKEN).json()["error"]
        assert call("GET", path, OPERATOR_TOKEN).status_code == 200
    wrong_scheme = requests.get(url + "/model", headers={"Authorization": f"Basic {OPERATOR_TOKEN}"},
                                timeout=10)
    assert wrong_scheme.status_code == 401
    for path in ("/health", "/openapi.json", "/"):
        assert call("GET", path, None).status_code == 200


def test_the_training_run_confirms_the_champion_with_an_operator_token(
        direct_server: LiveServer, model_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.training_run import ENV_SERVING_TOKEN, notify_serving

    version = model_store.versions[0]
    monkeypatch.delenv(ENV_SERVING_TOKEN, raising=False)
    refused = notify_serving(model_store.settings, version, url=direct_server.url, timeout_s=1, poll_s=0.2)
    assert refused["status"] == "timeout" and refused["error"] == "HTTP 401"
    monkeypatch.setenv(ENV_SERVING_TOKEN, OPERATOR_TOKEN)
    confirmed = notify_serving(model_store.settings, version, url=direct_server.url, timeout_s=30)
    assert confirmed["status"] == "confirmed"


def test_openapi_declares_the_bearer_schemes(direct_server: LiveServer) -> None:
    spec = requests.get(direct_server.url + "/openapi.json", timeout=10).json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["predictToken"] == {**schemes["predictToken"], "type": "http", "scheme": "bearer"}
    assert schemes["operatorToken"]["scheme"] == "bearer"
    assert spec["paths"]["/predict"]["post"]["security"] == [{"predictToken": []}]
    assert spec["paths"]["/model"]["get"]["security"] == [{"operatorToken": []}]
    assert spec["paths"]["/metrics"]["get"]["security"] == [{"operatorToken": []}]
    assert "security" not in spec["paths"]["/health"]["get"]
    assert {"401", "403", "415"} <= set(spec["paths"]["/predict"]["post"]["responses"])


def test_a_token_file_rotates_without_a_restart(direct_server: LiveServer, token_file: Path) -> None:
    new = "operator-token-rotated-9876543210"
    token_file.write_text(f"{OPERATOR_TOKEN}\n{new}\n")  # both valid while clients move

    def status(token: str) -> int:
        return requests.get(direct_server.url + "/model", headers={"Authorization": f"Bearer {token}"},
                            timeout=10).status_code

    def settles(token: str, expected: int) -> bool:
        """Six answers in a row (both workers) are `expected` before a generous deadline."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if [status(token) for _ in range(6)] == [expected] * 6:
                return True
            time.sleep(0.3)
        return False

    assert settles(new, 200) and settles(OPERATOR_TOKEN, 200)
    token_file.write_text(f"{new}\n")  # the old one is revoked
    assert settles(OPERATOR_TOKEN, 401) and settles(new, 200)
    token_file.write_text(f"{OPERATOR_TOKEN}\n")
    direct_server.headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}


# -- start-up warning -------------------------------------------------------------------------------
def start_output(model_store: Any, host: str, env: dict[str, str], wait_for: str) -> str:
    """What `churnops serve --host HOST` prints until `wait_for` appears (then it is stopped)."""
    from pipeline.processes import stop_process_group

    proc = subprocess.Popen([str(Path(sys.executable).parent / "churnops"), "serve", "--host", host,
                             "--port", str(free_port()), "--workers", "1"], cwd=model_store.home,
                            env={**model_store.env, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    output = ""
    try:
        deadline = time.monotonic() + 120
        while wait_for not in output and time.monotonic() < deadline and proc.poll() is None:
            line = proc.stdout.readline().decode(errors="replace")
            output += line
    finally:
        stop_process_group(proc)
    return output


def test_serving_on_a_public_address_without_tokens_warns_loudly(model_store: Any) -> None:
    out = start_output(model_store, "0.0.0.0", {}, "metrics in")
    assert "WITHOUT AUTHENTICATION" in out and "CHURNOPS_PREDICT_TOKENS" in out
    quiet = start_output(model_store, "0.0.0.0", {"CHURNOPS_PREDICT_TOKENS": PREDICT_TOKEN,
                                                  "CHURNOPS_OPERATOR_TOKENS": OPERATOR_TOKEN}, "metrics in")
    assert "serving on" in quiet and "WITHOUT AUTHENTICATION" not in quiet and "tokens=required" in quiet
    local = start_output(model_store, "127.0.0.1", {}, "metrics in")
    assert "serving on" in local and "WITHOUT AUTHENTICATION" not in local
