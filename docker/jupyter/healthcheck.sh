#!/bin/bash
# Container health: JupyterLab answers /api with 200 and the 127.0.0.1:8080 forward to
# MLflow is listening. Plain bash so a 1 s interval costs next to nothing.
exec 3<>/dev/tcp/127.0.0.1/8888 || exit 1
printf 'GET /api HTTP/1.0\r\nHost: 127.0.0.1:8888\r\n\r\n' >&3
read -r -t 2 status <&3 || exit 1
[[ $status == "HTTP/1."?" 200"* ]] || exit 1
exec 4<>/dev/tcp/127.0.0.1/8080
