#!/usr/bin/env bash
# stop-rgw.sh - stop the S3 server scripts/s3/start-rgw.sh started in DIR, and nothing else.
#
#   bash scripts/s3/stop-rgw.sh DIR [--purge]
#
# Only processes named by the pid files in DIR/run are signalled, and only while their command
# line still names DIR/ceph.conf (a pid reused by another process is left alone). start-rgw.sh's
# watcher (RGW_OWNER_PID) goes first, then the gateway, the OSD and the monitor, each with
# SIGTERM, 10 s, then SIGKILL.
# --purge then deletes what start-rgw.sh created in DIR (and DIR itself if that empties it).
# Exit 0 when none of those daemons runs any more (also when none ran).
set -uo pipefail

if [[ $# -lt 1 || $# -gt 2 || ( $# -eq 2 && $2 != --purge ) ]]; then
  echo "usage: $0 DIR [--purge]" >&2
  exit 2
fi
dir=$1
[[ $dir == /* ]] || dir="$PWD/$dir"
purge=0
[[ ${2:-} == --purge ]] && purge=1
conf="$dir/ceph.conf"

ours() { # is PID alive and started with our config?
  local cmdline
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmdline == *"-c $conf "* ]]
}
gone_within() { # PID TENTHS: wait until PID is no longer ours
  local i
  for ((i = 0; i < $2; i++)); do
    ours "$1" || return 0
    sleep 0.1
  done
  ! ours "$1"
}

# first the watcher start-rgw.sh leaves with RGW_OWNER_PID, so it does not stop us midway
watchfile="$dir/run/watch.pid"
if [[ -f $watchfile ]]; then
  pid=$(tr -dc '0-9' <"$watchfile")
  if [[ -n $pid ]] && cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") &&
    [[ $cmdline == *"rgw-watch $dir "* ]]; then
    kill -TERM "$pid" 2>/dev/null
  fi
  rm -f "$watchfile"
fi

status=0
for name in client.rgw osd.0 mon.a; do
  pidfile="$dir/run/$name.pid"
  [[ -f $pidfile ]] || continue
  pid=$(tr -dc '0-9' <"$pidfile")
  if [[ -z $pid ]] || ! ours "$pid"; then
    rm -f "$pidfile"
    continue
  fi
  kill -TERM "$pid" 2>/dev/null
  if ! gone_within "$pid" 100; then
    echo "stop-rgw: $name (pid $pid) still runs 10 s after SIGTERM: SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
    gone_within "$pid" 20
  fi
  if ours "$pid"; then
    echo "stop-rgw: cannot stop $name (pid $pid)" >&2
    status=1
  else
    echo "stop-rgw: stopped $name (pid $pid)" >&2
    rm -f "$pidfile"
  fi
done

if ((purge && status == 0)); then
  rm -rf "$dir/ceph.conf" "$dir/monmap" "$dir/mon" "$dir/osd" "$dir/run" "$dir/log" \
    "$dir/s3.env" "$dir/apt.log"
  rmdir "$dir" 2>/dev/null || true
fi
exit "$status"
