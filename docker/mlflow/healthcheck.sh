#!/bin/bash
# Container health: the tracking server answers /health with 200. Plain bash (no Python
# start-up) so a 1 s interval costs next to nothing and readiness is seen within a second.
exec 3<>/dev/tcp/127.0.0.1/8080 || exit 1
printf 'GET /health HTTP/1.0\r\nHost: 127.0.0.1:8080\r\n\r\n' >&3
read -r -t 2 status <&3 || exit 1
[[ $status == "HTTP/1."?" 200"* ]]
