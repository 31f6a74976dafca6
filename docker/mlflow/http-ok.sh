#!/bin/bash
# Usage: http-ok.sh PORT PATH. Succeeds when 127.0.0.1:PORT answers GET PATH with 200.
# The images' health checks: plain bash (no Python start-up), so a 1 s interval costs
# next to nothing.
#
# Docker runs the first check one interval after the start, then one per interval. A
# server that is not listening yet is waited for (up to 2 s, inside the checks' 3 s
# timeout) instead of failing at once, so "healthy" comes the moment it answers, not at
# the next tick: `depends_on: service_healthy` and `invoke up` see it up to 1 s sooner.
port=$1 path=$2
for _ in {1..40}; do
  exec 3<>"/dev/tcp/127.0.0.1/$port" && break
  sleep 0.05
done 2>/dev/null
[[ -e /dev/fd/3 ]] || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$path" "$port" >&3
read -r -t 2 status <&3 || exit 1
[[ $status == "HTTP/1."?" 200"* ]]
