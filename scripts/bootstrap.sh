#!/usr/bin/env bash
# Shared by scripts/demo and scripts/test: the locked environment in .venv and the local services.
# Idempotent: a second call costs a few seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '\033[1m[churnops]\033[0m %s\n' "$*" >&2; }

if ! command -v uv >/dev/null 2>&1; then
  say "installing uv (the locked installer) with pip"
  python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

say "syncing .venv from uv.lock"
uv sync --frozen --quiet
# Compiled bytecode once: without it every process (each CLI call, DVC stage, joblib worker, gunicorn worker)
# recompiles its imports, which costs seconds per process where PYTHONDONTWRITEBYTECODE is set.
if [ ! -d .venv/lib/python3.11/site-packages/mlflow/__pycache__ ]; then
  say "compiling the environment's bytecode (once)"
  uv sync --frozen --quiet --compile-bytecode
fi
export PATH="$PWD/.venv/bin:$PATH"

# nginx buffers slow clients before `churnops serve`'s workers (serving/front.py); wrk drives the serving
# benchmark. Installed where missing when apt-get can (root), as Debian packages.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ] || ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing nginx-light and wrk (apt-get)"
    (apt-get install -y --no-install-recommends nginx-light wrk >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends nginx-light wrk >/dev/null 2>&1; }) \
      || say "could not install nginx-light/wrk: install them (apt-get install nginx-light wrk), or serve with --front none behind another buffering proxy"
  else
    say "nginx or wrk is missing: install them as root (apt-get install nginx-light wrk)"
  fi
fi

# Local services: start the ones that do not answer, when their binaries exist.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null 2>&1; then
    say "starting a local redis-server on 127.0.0.1:6379"
    mkdir -p /tmp/churnops-redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /tmp/churnops-redis --logfile /tmp/churnops-redis/redis.log
    for _ in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && break; sleep 0.1; done
  else
    say "no Redis answers at 127.0.0.1:6379 and no redis-server binary: install redis-server (apt-get install redis-server) or set REDIS_URL"
  fi
fi
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    say "starting the local PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
fi
export DVC_NO_ANALYTICS=1 TRANSFORMERS_VERBOSITY=error

# The dashboard's browser test drives Debian's chromium with chromium-driver (Selenium): install them where
# missing (as root, quietly, only when absent).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium and chromium-driver (the dashboard's browser test)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; } \
      || say "could not install chromium/chromium-driver: the dashboard's browser test fails until they are installed"
  else
    say "no chromium/chromedriver here and not root: apt-get install chromium chromium-driver (the browser test)"
  fi
fi
