#!/usr/bin/env bash
# Stop the docker-registry process that PIDFILE names (SIGTERM, SIGKILL after $STOP_TIMEOUT s,
# default 10) and remove PIDFILE. Does nothing, successfully, when it is not running.
#
#   stop.sh PIDFILE
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 PIDFILE" >&2
  exit 2
fi
pidfile=$1

# Alive, not a zombie, and still a registry (a pid can be reused by another program).
alive() {
  local pid=$1 state
  [[ -r /proc/$pid/stat ]] || return 1
  state="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ "$state" != "Z" && "$state" != "X" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'registry'
}

[[ -f "$pidfile" ]] || exit 0
pid="$(cat "$pidfile")"
if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid"; then
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + ${STOP_TIMEOUT:-10}))
  while alive "$pid" && (( SECONDS < deadline )); do
    sleep 0.05
  done
  if alive "$pid"; then
    echo "stop.sh: pid $pid did not stop on SIGTERM; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.05; done
  fi
fi
rm -f "$pidfile"
