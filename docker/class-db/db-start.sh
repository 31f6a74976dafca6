#!/bin/sh
# Starts the class's PostgreSQL; on an empty data volume it first creates the cluster,
# the `mlflow` role (password from the stack's secret) and MLflow's two databases: runs
# (`mlflow`) and accounts (`mlflow_auth`).
set -eu
password_file=${LAB_DB_PASSWORD_FILE:-/run/secrets/db-password}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb --username=mlflow --pwfile="$password_file" --auth-local=peer \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # Local socket: the `postgres` OS user is the `mlflow` role (backups run pg_dump so).
  echo 'local all all peer map=owner' > "$PGDATA/pg_hba.conf"
  echo 'host all all all scram-sha-256' >> "$PGDATA/pg_hba.conf"
  echo 'owner postgres mlflow' > "$PGDATA/pg_ident.conf"
  pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
  createdb -U mlflow mlflow
  createdb -U mlflow mlflow_auth
  pg_ctl -w stop >/dev/null
  echo "db: created the cluster and MLflow's databases"
fi
exec postgres -c listen_addresses='*' -c max_connections=200
