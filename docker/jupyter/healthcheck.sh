#!/bin/bash
# Container health: JupyterLab answers /api with 200 and the 127.0.0.1:8080 forward to
# MLflow is listening (http-ok.sh comes with the MLflow image this one builds on).
/usr/local/lib/mlflow-lab/http-ok.sh 8888 /api || exit 1
exec 4<>/dev/tcp/127.0.0.1/8080
