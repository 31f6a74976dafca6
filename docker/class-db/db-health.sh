#!/bin/sh
# Healthy when PostgreSQL accepts connections on its TCP port (what MLflow uses).
exec pg_isready -q -h 127.0.0.1 -p 5432 -U mlflow -d mlflow
