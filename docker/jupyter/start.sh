#!/bin/sh
# Notebooks use http://127.0.0.1:8080 as the lab guide says. socat forwards that port
# to the MLflow service and resolves its name for every connection, so a restarted
# MLflow container (new address) is reached again without restarting Jupyter.
set -eu
upstream=${LAB_MLFLOW_UPSTREAM:-mlflow:8080}
(
  while true; do
    socat TCP-LISTEN:8080,bind=127.0.0.1,fork,reuseaddr "TCP:${upstream}" || true
    sleep 1
  done
) &
# A dataset cache that cannot be copied costs a warning in the logs, never the lab.
/usr/local/lib/mlflow-lab/sync_datasets.sh \
  || echo "warning: the dataset cache could not be copied into $SCIKIT_LEARN_DATA" >&2
exec python3 /usr/local/lib/mlflow-lab/lab_server.py
