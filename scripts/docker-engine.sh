#!/usr/bin/env bash
# Ensures a Docker engine is running on this machine: installs Debian's docker.io
# (with iptables) when missing, starts dockerd in the background, waits for it.
# Idempotent: does nothing when `docker info` already answers.
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

if docker info >/dev/null 2>&1; then
  echo "docker engine already running"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing docker.io"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io iptables >/dev/null
fi
log=${DOCKERD_LOG:-/tmp/dockerd.log}
echo "starting dockerd (log: $log)"
$SUDO setsid dockerd >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    echo "docker engine ready: $(docker version --format '{{.Server.Version}}')"
    exit 0
  fi
  sleep 0.5
done
echo "dockerd did not come up; last log lines:" >&2
tail -n 30 "$log" >&2
exit 1
