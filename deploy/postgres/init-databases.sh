#!/usr/bin/env bash
# Creates the platform's databases in PostgreSQL, each owned by its own login role:
#   Airflow metadata (AIRFLOW_DB_*), MLflow tracking + registry (MLFLOW_DB_*), churnops batch scores (CHURNOPS_DB_*).
#
# The postgres image runs it once, on the first start of an empty data volume (/docker-entrypoint-initdb.d/).
# It is idempotent (existing roles get the current password, existing databases are kept), so it also sets up an
# existing server by hand:
#   PGHOST=db.internal POSTGRES_USER=postgres AIRFLOW_DB_PASSWORD=... MLFLOW_DB_PASSWORD=... \
#     CHURNOPS_DB_PASSWORD=... deploy/postgres/init-databases.sh
# Passwords travel through the environment (psql \getenv), never on a command line.
set -euo pipefail

create_database() {  # create_database DATABASE OWNER PASSWORD_VARIABLE
  local db="$1" owner="$2" password_var="$3"
  if [ -z "${!password_var:-}" ]; then
    echo "init-databases: $password_var is not set (it is the password of role $owner)" >&2
    exit 1
  fi
  CHURNOPS_INIT_PASSWORD="${!password_var}" psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-${POSTGRES_USER:-postgres}}" \
    --set db="$db" --set owner="$owner" <<'SQL'
\getenv password CHURNOPS_INIT_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner')
\gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'owner', :'password')
\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db')
\gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db')
\gexec
SQL
  echo "init-databases: database $db owned by $owner is ready"
}

create_database "${AIRFLOW_DB_NAME:-airflow}" "${AIRFLOW_DB_USER:-airflow}" AIRFLOW_DB_PASSWORD
create_database "${MLFLOW_DB_NAME:-mlflow}" "${MLFLOW_DB_USER:-mlflow}" MLFLOW_DB_PASSWORD
create_database "${CHURNOPS_DB_NAME:-churnops}" "${CHURNOPS_DB_USER:-churnops}" CHURNOPS_DB_PASSWORD
