#!/bin/bash
# Container health: JupyterLab answers /api with 200 (http-ok.sh comes with the MLflow
# image this one builds on) and the 127.0.0.1:8080 forward to MLflow is listening.
# The forward is looked up in the socket table, not connected to: a connection would
# make socat dial MLflow every second, and log an error each time MLflow is down.
/usr/local/lib/mlflow-lab/http-ok.sh 8888 /api || exit 1
# 0100007F:1F90 is 127.0.0.1:8080; state 0A is LISTEN.
grep -q '^ *[0-9]*: 0100007F:1F90 00000000:0000 0A ' /proc/net/tcp
