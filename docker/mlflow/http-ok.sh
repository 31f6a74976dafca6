#!/bin/bash
# Usage: http-ok.sh PORT PATH. Succeeds when 127.0.0.1:PORT answers GET PATH with 200.
# The images' health probe: plain bash, no Python start-up.
#
# Docker runs the first check one interval after the start. A server that is not
# listening yet is waited for (up to 2 s) instead of failing at once, so "healthy" comes
# the moment it answers, not at the next check: `depends_on: service_healthy` and
# `invoke up` see it up to 1 s sooner.
port=$1 path=$2
for _ in {1..40}; do
  exec 3<>"/dev/tcp/127.0.0.1/$port" && break
  sleep 0.05
done 2>/dev/null
[[ -e /dev/fd/3 ]] || exit 1
printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$path" "$port" >&3
read -r -t 2 status <&3 || exit 1
[[ $status == "HTTP/1."?" 200"* ]]
