#!/usr/bin/env bash
# Start Debian's docker-registry as a plain background process, as its systemd unit does,
# after stopping the one PIDFILE names (so it is safe to call when the registry runs: it then
# restarts it, which also empties its blob descriptor cache).
#
#   start.sh [--readonly] CONFIG PIDFILE LOGFILE [HOST:PORT]
#
# --readonly  start with REGISTRY_STORAGE_MAINTENANCE_READONLY={"enabled": true}: pulls work,
#             pushes get 405 (the registry reads this only at start-up).
# HOST:PORT   wait (up to $START_TIMEOUT s, default 30) until GET /v2/ answers 200 there.
# The registry runs in its own session with its output appended to LOGFILE, so the caller's
# pipes and process group are not tied to it. $REGISTRY_BIN overrides the binary.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly_mode=0
if [[ "${1:-}" == "--readonly" ]]; then
  readonly_mode=1
  shift
fi
if [[ $# -lt 3 ]]; then
  echo "usage: $0 [--readonly] CONFIG PIDFILE LOGFILE [HOST:PORT]" >&2
  exit 2
fi
config=$1 pidfile=$2 logfile=$3 addr=${4:-}
bin="${REGISTRY_BIN:-/usr/bin/docker-registry}"

"$here/stop.sh" "$pidfile"

if [[ $readonly_mode -eq 1 ]]; then
  export REGISTRY_STORAGE_MAINTENANCE_READONLY='{"enabled": true}'
else
  unset REGISTRY_STORAGE_MAINTENANCE_READONLY
fi
echo "start.sh: $(date -u +%FT%TZ) starting $bin serve $config (readonly=$readonly_mode)" >>"$logfile"
# Without job control a background job is not a process group leader, so setsid does not fork:
# $! is the registry's own pid.
setsid "$bin" serve "$config" >>"$logfile" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

[[ -z "$addr" ]] && exit 0
deadline=$((SECONDS + ${START_TIMEOUT:-30}))
while (( SECONDS < deadline )); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: the registry (pid $pid) exited at start-up; last lines of $logfile:" >&2
    tail -n 20 "$logfile" >&2
    rm -f "$pidfile"
    exit 1
  fi
  code="$(curl -s -o /dev/null -m 1 -w '%{http_code}' "http://$addr/v2/" || true)"
  if [[ "$code" == "200" || "$code" == "401" ]]; then
    exit 0
  fi
  sleep 0.05
done
echo "start.sh: the registry (pid $pid) does not answer on http://$addr/v2/; last lines of $logfile:" >&2
tail -n 20 "$logfile" >&2
exit 1
