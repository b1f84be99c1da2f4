#!/usr/bin/env bash
# start-rgw.sh - a disposable S3 server for the tests: Ceph's RADOS Gateway on a one-node Ceph
# cluster (one monitor, one OSD keeping its objects in memory), all plain daemons with pid files
# under DIR. No systemd, no containers, no disks; the data is gone when it stops.
#
#   bash scripts/s3/start-rgw.sh DIR PORT
#
# DIR   working directory (config, monitor store, logs, pid files, s3.env); the pieces this
#       script owns are recreated in it, anything else there is left alone.
# PORT  the S3 port. The monitor listens on PORT+1 and the OSD on ports PORT+2..PORT+10, all on
#       127.0.0.1; a second server at the same time needs a PORT at least 11 away.
#
# Environment (optional):
#   RGW_BIND        addresses the S3 port is bound to, space-separated (default "127.0.0.1").
#                   Registry containers on Docker's default bridge reach the host at the bridge's
#                   gateway (e.g. 172.17.0.1): add it here. Only the S3 port is bound there; the
#                   Ceph daemons (no authentication between them) stay on loopback.
#   S3_ACCESS_KEY, S3_SECRET_KEY   the S3 user's keys (fixed test defaults)
#   S3_BUCKET       a bucket to create (default: none)
#   RGW_MEMORY      bytes the in-memory OSD offers (default 4 GiB; RAM use is about twice what
#                   is stored, writes fail near 95 %)
#   RGW_TIMEOUT     seconds to wait for each step (default 60)
#   RGW_OWNER_PID   when set, a watcher (its own session, pid file run/watch.pid) runs
#                   stop-rgw.sh DIR --purge once that process is gone: a test run killed with
#                   SIGKILL leaves nothing running. stop-rgw.sh stops the watcher first.
#
# Needs the Debian packages radosgw, ceph-mon and ceph-osd (which bring ceph-common,
# ceph-base and python3-rados) and curl; they are installed when missing (root only).
# scripts/start-docker.sh installs them too.
#
# On success: exit 0 once a SigV4-signed S3 request succeeded, the daemons left running, and
# KEY=VALUE lines (S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, ...) on
# stdout and in DIR/s3.env. Progress on stderr. On failure nothing it started is left running.
# Stop it with scripts/s3/stop-rgw.sh DIR [--purge].
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 DIR PORT" >&2
  exit 2
fi
dir=$1
port=$2
if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port + 10 > 65535)); then
  echo "start-rgw: PORT must be a number from 1 to 65525, not '$port'" >&2
  exit 2
fi
[[ $dir == /* ]] || dir="$PWD/$dir"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

bind_addrs=${RGW_BIND:-127.0.0.1}
access_key=${S3_ACCESS_KEY:-RETENTIONDTESTKEY001}
secret_key=${S3_SECRET_KEY:-retentiond-test-secret-key-0000000000001}
bucket=${S3_BUCKET:-}
memory=${RGW_MEMORY:-4294967296}
timeout=${RGW_TIMEOUT:-60}
owner=${RGW_OWNER_PID:-}
if [[ -n $owner ]] && ! kill -0 "$owner" 2>/dev/null; then
  echo "start-rgw: RGW_OWNER_PID=$owner is not a running process" >&2
  exit 2
fi
mon_port=$((port + 1))
conf="$dir/ceph.conf"
export CEPH_CONF="$conf"

started=$(date +%s%N)
say() {
  local ms=$((($(date +%s%N) - started) / 1000000))
  printf 'start-rgw [%d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*" >&2
}
fail() {
  say "error: $*"
  exit 1
}

# --- packages -----------------------------------------------------------------------------
needed=(radosgw ceph-mon ceph-osd curl)
absent=()
for cmd in radosgw radosgw-admin ceph-mon ceph-osd monmaptool ceph curl; do
  command -v "$cmd" >/dev/null || absent+=("$cmd")
done
if ((${#absent[@]})); then
  ((EUID == 0)) || fail "missing ${absent[*]}; as root: apt-get install --no-install-recommends ${needed[*]}"
  say "installing ${needed[*]} (missing: ${absent[*]})"
  mkdir -p "$dir"
  export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
  apt_install() {
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${needed[@]}" \
      >>"$dir/apt.log" 2>&1
  }
  # a stale package list is the usual reason a plain install fails: refresh it once
  apt_install || { apt-get -o DPkg::Lock::Timeout=300 update -q >>"$dir/apt.log" 2>&1 && apt_install; } ||
    fail "apt-get install failed; see $dir/apt.log"
  say "installed: $(ceph --version)"
fi

# --- our daemons, by pid file -------------------------------------------------------------
# A pid counts as ours only while its command line names our ceph.conf ("-c DIR/ceph.conf"), so
# a stale pid file never points at an unrelated process.
daemons=(client.rgw osd.0 mon.a) # stop order: gateway, OSD, monitor
ours() { # is PID alive and started with our config?
  local cmdline
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ $cmdline == *"-c $conf "* ]]
}
for name in "${daemons[@]}"; do
  pid=$(cat "$dir/run/$name.pid" 2>/dev/null) || continue
  if [[ -n $pid ]] && ours "$pid"; then
    fail "$name of an earlier start still runs (pid $pid): run $here/stop-rgw.sh $dir first"
  fi
done

launched=0
cleanup() {
  local rc=$?
  ((rc != 0 && launched)) || return 0
  say "stopping what was started (logs stay in $dir/log)"
  "$here/stop-rgw.sh" "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# the probe runs in a child bash with a 2 s limit (a connect to a non-local address can hang)
# shellcheck disable=SC2016
in_use() { timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }
for addr in $bind_addrs; do
  in_use "$addr" "$port" && fail "$addr:$port is in use already; choose another PORT"
done
in_use 127.0.0.1 "$mon_port" && fail "127.0.0.1:$mon_port (the monitor's, PORT+1) is in use already"

rm -rf "$dir/ceph.conf" "$dir/monmap" "$dir/mon" "$dir/osd" "$dir/run" "$dir/log" "$dir/s3.env"
mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"

# --- configuration ------------------------------------------------------------------------
endpoints=""
for addr in $bind_addrs; do endpoints+=" endpoint=$addr:$port"; done
fsid=$(cat /proc/sys/kernel/random/uuid)
cat >"$conf" <<CONF
# written by scripts/s3/start-rgw.sh; everything is under $dir
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind port min = $((port + 2))
ms bind port max = $((port + 10))
# Loopback-only daemons: no cephx. RGW still checks every S3 signature itself. Without cephx
# the client must not ask the monitor for "secure" mode, or radosgw waits for a session key
# until the mount timeout.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
keyring = /dev/null
client mount timeout = 30
run dir = $dir/run
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
# one OSD: one replica, a few placement groups, no warnings about either
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
# propose map changes at once instead of batching for a second: pools appear quickly
paxos propose interval = 0.05

[mon]
mon data = $dir/mon/\$name
mon cluster log file = $dir/log/cluster.log

[osd]
osd data = $dir/osd/\$name
osd objectstore = memstore
memstore device bytes = $memory
osd mon shutdown timeout = 1

[client.rgw]
# tcp_nodelay: small responses otherwise wait for the peer's delayed ACK (~40 ms each)
rgw frontends = beast${endpoints} tcp_nodelay=1
rgw thread pool size = 32
# free deleted objects' data (held in RAM) after 30 s instead of 2 h
rgw gc obj min wait = 30
rgw gc processor period = 30
CONF

# --- monitor ------------------------------------------------------------------------------
launched=1
monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/monmap" >/dev/null
ceph-mon -c "$conf" -i a --mkfs --monmap "$dir/monmap" 2>>"$dir/log/setup.log" ||
  fail "ceph-mon --mkfs failed; see $dir/log/setup.log"
ceph-mon -c "$conf" -i a 2>>"$dir/log/setup.log" || fail "ceph-mon did not start; see $dir/log/mon.a.log"
say "monitor on 127.0.0.1:$mon_port"

# --- OSD 0 (memstore) ---------------------------------------------------------------------
osd_uuid=$(cat /proc/sys/kernel/random/uuid)
osd_id=$(timeout "$timeout" ceph osd new "$osd_uuid" 2>>"$dir/log/setup.log") ||
  fail "the monitor did not register the OSD; see $dir/log/mon.a.log"
[[ $osd_id == 0 ]] || fail "expected OSD id 0, the monitor gave $osd_id"
mkdir -p "$dir/osd/osd.0"
ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>>"$dir/log/setup.log" ||
  fail "ceph-osd --mkfs failed; see $dir/log/setup.log"
ceph-osd -c "$conf" -i 0 2>>"$dir/log/setup.log" || fail "ceph-osd did not start; see $dir/log/osd.0.log"
say "OSD started"

# --- the gateway's pools, created up front in one client session --------------------------
# (radosgw would create them on first use, making the first bucket slow.) The system python:
# the rados module is Debian's python3-rados, not in any virtualenv.
timeout "$timeout" /usr/bin/python3 - "$conf" <<'PY' 2>>"$dir/log/setup.log" || fail "creating the pools failed; see $dir/log/setup.log"
import errno, json, sys
import rados

cluster = rados.Rados(conffile=sys.argv[1])
cluster.connect(timeout=30)
for pool in (".rgw.root", "default.rgw.control", "default.rgw.meta", "default.rgw.log",
             "default.rgw.buckets.index", "default.rgw.buckets.data", "default.rgw.buckets.non-ec"):
    for cmd in ({"prefix": "osd pool create", "pool": pool, "pg_num": 8, "pgp_num": 8},
                {"prefix": "osd pool application enable", "pool": pool, "app": "rgw"}):
        ret, _, err = cluster.mon_command(json.dumps(cmd), b"")
        if ret not in (0, -errno.EEXIST):
            sys.exit(f"{cmd}: {ret} {err}")
cluster.shutdown()
PY
say "pools created"

# --- gateway ------------------------------------------------------------------------------
radosgw -c "$conf" -n client.rgw 2>>"$dir/log/setup.log" || fail "radosgw did not start; see $dir/log/client.rgw.log"
first_addr=${bind_addrs%% *}
endpoint="http://$first_addr:$port"
deadline=$(($(date +%s) + timeout))
# an anonymous ListBuckets answers 200 once the gateway serves
until [[ $(curl -s -o /dev/null -w '%{http_code}' "$endpoint/") == 200 ]]; do
  (($(date +%s) < deadline)) || fail "radosgw does not answer on $endpoint; see $dir/log/client.rgw.log"
  sleep 0.1
done
say "radosgw answers on${endpoints//endpoint=/ }"

# --- S3 user, proven by signed requests ---------------------------------------------------
radosgw-admin -c "$conf" user create --uid=retentiond-test --display-name="retentiond tests" \
  --access-key="$access_key" --secret-key="$secret_key" >"$dir/log/user.json" 2>>"$dir/log/setup.log" ||
  fail "radosgw-admin user create failed; see $dir/log/setup.log"
signed() {
  curl -sS -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" \
    --user "$access_key:$secret_key" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"
}
if [[ -n $bucket ]]; then
  code=$(signed -X PUT "$endpoint/$bucket") || true
  [[ $code == 200 ]] || fail "creating bucket $bucket answered HTTP $code"
fi
code=$(signed "$endpoint/") || true
[[ $code == 200 ]] || fail "a signed ListBuckets answered HTTP $code"
say "S3 ready"

if [[ -n $owner ]]; then
  # "rgw-watch DIR" in its command line is how stop-rgw.sh recognises it; once the owner is
  # gone it becomes stop-rgw.sh (exec), which no longer matches, so it is never stopped midway
  # shellcheck disable=SC2016
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec bash "$3" "$2" --purge' \
    "rgw-watch $dir" "$owner" "$dir" "$here/stop-rgw.sh" </dev/null >>"$dir/log/watch.log" 2>&1 &
  echo $! >"$dir/run/watch.pid"
  say "watching pid $owner"
fi

cat >"$dir/s3.env" <<ENV
S3_ENDPOINT=$endpoint
AWS_ACCESS_KEY_ID=$access_key
AWS_SECRET_ACCESS_KEY=$secret_key
AWS_REGION=us-east-1
S3_BUCKET=$bucket
RGW_DIR=$dir
CEPH_CONF=$conf
ENV
cat "$dir/s3.env"
