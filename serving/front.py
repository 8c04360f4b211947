"""The buffering front of ``churnops serve``: nginx before gunicorn's sync workers.

A sync worker serves one connection at a time, so a client that sends its headers or its body slowly holds
a whole worker (gunicorn's documentation: sync workers must sit behind a buffering proxy). nginx is that
proxy: it reads every request completely (headers within ``serving.client_timeout_s``, the body with at
most that long between two reads, chunked bodies included) before one byte reaches a worker, and takes the
response whole from the worker, so a slow reader does not hold one either. Thousands of slow connections
cost nginx a few kilobytes each.

Workers listen on a Unix socket in a private directory (mode 0700) that only this nginx reaches. Every
answer nginx makes itself (malformed HTTP, a bad chunk size, a body over ``serving.max_body_bytes``,
headers too large, workers not answering) is the service's JSON error shape, never nginx's HTML page. A
client that stops sending half-way is disconnected after the timeout; no worker ever waits for it.

:func:`render_config` writes the configuration; :class:`Front` starts and stops the process (gunicorn's
master does both, see :mod:`serving.gunicorn_conf`).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from churnops.logs import get_logger

log = get_logger(__name__)

ERROR_PREFIX = "/.churnops-errors/"
# The status codes nginx may answer on its own, with the service's message for each.
ERRORS: dict[int, str] = {
    400: "malformed HTTP request (request line, headers or chunked body framing); nothing was processed",
    404: "no such route; the API is described at /openapi.json",
    405: "method not allowed",
    408: "the request did not arrive in time; send it whole",
    413: "the body is larger than {max_body} bytes (serving.max_body_bytes); send fewer instances per "
         "request",
    411: "a body needs Content-Length or chunked transfer encoding",
    414: "the request line is too long",
    431: "the request's header fields are too large",
    494: "the request's header fields are too large",
    500: "internal error in the front server; the server log has the details",
    501: "this transfer encoding is not supported; send the body with Content-Length or chunked",
    502: "the prediction workers are not answering; retry shortly",
    503: "the prediction workers are not answering; retry shortly",
    504: "the prediction workers did not answer in time; retry shortly",
}


def nginx_binary() -> str | None:
    """The nginx executable (PATH, then the Debian location), or None when it is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


@dataclass(frozen=True)
class FrontConfig:
    host: str
    port: int
    socket_path: Path
    max_body_bytes: int
    client_timeout_s: float
    worker_timeout_s: float
    keepalive_s: int
    access_log: bool = False


def _listen(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _json_literal(text: str) -> str:
    """A JSON document as an nginx single-quoted string."""
    return "'" + json.dumps({"error": text}).replace("\\", "\\\\").replace("'", "\\'") + "'"


def render_config(cfg: FrontConfig, run_dir: Path) -> str:
    """The whole nginx.conf for one front (everything under `run_dir`, nothing in /etc or /var)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else 65536
    connections = max(256, min(8192, limit // 2 - 16))
    user = ""
    if os.geteuid() == 0:  # as root nginx's workers would become nobody, who cannot reach the private socket
        import grp
        import pwd

        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};\n"
    timeout = f"{max(1, round(cfg.client_timeout_s))}s"
    pages = []
    for status, message in ERRORS.items():
        code = 431 if status == 494 else status
        text = message.format(max_body=cfg.max_body_bytes)
        # a URI, not a named location: nginx cannot redirect a request without a URI (a garbage request
        # line) to a named one; `internal` keeps clients from asking for the pages themselves
        pages.append(f"    error_page {status} ={code} {ERROR_PREFIX}{status};\n"
                     f"    location = {ERROR_PREFIX}{status} {{\n"
                     f"      internal;\n"
                     f"      default_type application/json;\n"
                     f"      add_header Cache-Control no-store always;\n"
                     f"      return {code} {_json_literal(text)};\n"
                     f"    }}\n")
    access = "access_log /dev/stderr;" if cfg.access_log else "access_log off;"
    return f"""# written by churnops serve (serving/front.py) for this run; edits are lost
{user}daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile {limit};
pid {run_dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections {connections}; }}
http {{
  {access}
  server_tokens off;
  default_type application/json;
  client_body_temp_path {run_dir}/client_body;
  proxy_temp_path {run_dir}/proxy;
  fastcgi_temp_path {run_dir}/fastcgi;
  uwsgi_temp_path {run_dir}/uwsgi;
  scgi_temp_path {run_dir}/scgi;
  # whole requests only reach the workers: headers within the timeout, the body with at most the timeout
  # between two reads; a body over 32 KiB (batches) waits in a file of the run directory, so a crowd of
  # connections declaring large bodies costs at most 32 KiB of memory each
  client_header_timeout {timeout};
  client_body_timeout {timeout};
  send_timeout {timeout};
  keepalive_timeout {cfg.keepalive_s}s;
  client_max_body_size {cfg.max_body_bytes};
  client_body_buffer_size 32k;
  client_header_buffer_size 1k;
  large_client_header_buffers 4 8k;
  reset_timedout_connection on;
  upstream churnops_workers {{ server unix:{cfg.socket_path}; }}
  server {{
    listen {_listen(cfg.host, cfg.port)} backlog=2048;
    location / {{
      proxy_pass http://churnops_workers;
      proxy_request_buffering on;
      proxy_buffering on;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_read_timeout {max(1, round(cfg.worker_timeout_s))}s;
    }}
{"".join(pages)}  }}
}}
"""


class FrontError(RuntimeError):
    """nginx could not be started (not installed, a bad address, the port taken)."""


class Front:
    """One nginx process in front of the workers' Unix socket."""

    def __init__(self, cfg: FrontConfig, binary: str, run_dir: Path) -> None:
        self.cfg = cfg
        self.binary = binary
        self.run_dir = run_dir
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def prepare(cls, host: str, port: int, *, max_body_bytes: int, client_timeout_s: float,
                worker_timeout_s: float, keepalive_s: int, access_log: bool = False) -> Front:
        binary = nginx_binary()
        if binary is None:
            raise FrontError("nginx is not installed (apt-get install nginx-light); it buffers slow clients "
                             "before the workers. Start with --front none only behind another buffering "
                             "proxy.")
        run_dir = Path(tempfile.mkdtemp(prefix="churnops-serve-"))  # mode 0700: the socket stays private
        cfg = FrontConfig(host, port, run_dir / "workers.sock", max_body_bytes, client_timeout_s,
                          worker_timeout_s, keepalive_s, access_log)
        return cls(cfg, binary, run_dir)

    @property
    def conf_path(self) -> Path:
        return self.run_dir / "nginx.conf"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        self.conf_path.write_text(render_config(self.cfg, self.run_dir))
        check = subprocess.run([self.binary, "-t", "-q", "-e", "stderr", "-p", str(self.run_dir), "-c",
                                str(self.conf_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise FrontError(f"nginx refused its configuration: {check.stderr.strip()}")
        self.proc = subprocess.Popen([self.binary, "-e", "stderr", "-p", str(self.run_dir), "-c",
                                      str(self.conf_path)])
        log.info("front.started", listen=_listen(self.cfg.host, self.cfg.port), pid=self.proc.pid,
                 client_timeout_s=self.cfg.client_timeout_s, max_body_bytes=self.cfg.max_body_bytes)

    def stop(self, timeout_s: float = 10.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: requests in flight are answered
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        shutil.rmtree(self.run_dir, ignore_errors=True)
