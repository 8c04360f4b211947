#!/bin/sh
# Entry point of the Airflow containers (db migrate, api-server, scheduler, dag-processor, triggerer,
# celery worker): `deploy/airflow/entrypoint.sh ARGS` runs `airflow ARGS`.
#
# Before that it writes the SimpleAuthManager password file from the environment, so the admin's password is
# the one in .env (AIRFLOW_ADMIN_USER / AIRFLOW_ADMIN_PASSWORD) rather than one Airflow generates and prints
# to the log. The file is written with mode 600 and replaced atomically.
set -eu

if [ -n "${AIRFLOW_ADMIN_PASSWORD:-}" ]; then
  : "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?set it to where the API server reads passwords}"
  python - <<'PY'
import json
import os
import tempfile

target = os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]
user = os.environ.get("AIRFLOW_ADMIN_USER") or "admin"
folder = os.path.dirname(os.path.abspath(target))
os.makedirs(folder, exist_ok=True)
fd, tmp = tempfile.mkstemp(dir=folder, prefix=".passwords-")  # created with mode 600
with os.fdopen(fd, "w") as fh:
    json.dump({user: os.environ["AIRFLOW_ADMIN_PASSWORD"]}, fh)
    fh.write("\n")
os.replace(tmp, target)
PY
fi

exec airflow "$@"
