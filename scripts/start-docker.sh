#!/usr/bin/env bash
# Make this machine ready for the integration tests: install the Debian packages they use,
# start dockerd if it is not running, build (or reuse) the distribution v3.1.1 binary and build
# the two registry test images, retentiond-test/registry:2.8.2 and :3.1.1.
#
#   bash scripts/start-docker.sh
#
# Idempotent: installs only what is missing, leaves a working dockerd alone; the v3 binary is
# cached outside the checkout (scripts/build-registry-v3.sh: the first build takes about
# 2-5 minutes on 2 cores, later runs reuse it) and the image builds are cache hits the second
# time. Needs root (apt-get, dockerd).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PACKAGES=(docker.io docker-registry skopeo prometheus docker-compose python3-venv ca-certificates systemd redis-server
  busybox-static chromium)
# The S3 test server (scripts/s3/start-rgw.sh), without recommends: those would add ceph-mds
# and some 45 python packages the tests never use.
PACKAGES_NO_RECOMMENDS=(radosgw ceph-mon ceph-osd)
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/retentiond-dockerd.log}"

log() { echo "start-docker: $*" >&2; }

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
missing_lean=()
for pkg in "${PACKAGES_NO_RECOMMENDS[@]}"; do
  installed "$pkg" || missing_lean+=("$pkg")
done

if [[ ${#missing[@]} -gt 0 || ${#missing_lean[@]} -gt 0 ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing packages ${missing[*]} ${missing_lean[*]} and not root: run as root"
    exit 1
  fi
  log "installing ${missing[*]} ${missing_lean[*]}"
  # Packages must not start their services here (no init system; we start dockerd below).
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if [[ ${#missing[@]} -gt 0 ]]; then
    apt-get install -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
      "${missing[@]}" >/tmp/retentiond-apt.log 2>&1 || { cat /tmp/retentiond-apt.log >&2; exit 1; }
  fi
  if [[ ${#missing_lean[@]} -gt 0 ]]; then
    apt-get install -y -qq --no-install-recommends "${missing_lean[@]}" >>/tmp/retentiond-apt.log 2>&1 ||
      { cat /tmp/retentiond-apt.log >&2; exit 1; }
  fi
fi

if docker info >/dev/null 2>&1; then
  log "dockerd is running"
else
  if [[ $(id -u) -ne 0 ]]; then
    log "docker info fails and not root: cannot start dockerd"
    exit 1
  fi
  log "starting dockerd (log: $DOCKERD_LOG)"
  # Its own session, so it outlives this script and the shell that ran it.
  setsid nohup dockerd --iptables=false --ip6tables=false >>"$DOCKERD_LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    log "dockerd did not come up within 60 s; last lines of $DOCKERD_LOG:"
    tail -n 40 "$DOCKERD_LOG" >&2 || true
    exit 1
  fi
  log "dockerd is up"
fi

if [[ $# -gt 0 ]]; then
  log "takes no arguments (scripts/build-registry-image.sh VERSION TAG builds one image)"
  exit 2
fi

# Prints the binary's path; says on stderr when it builds (or falls back to registry:3.1.1).
bash "$here/build-registry-v3.sh" >/dev/null
for version in 2.8.2 3.1.1; do
  out="$(bash "$here/build-registry-image.sh" "$version")"
  case "$out" in
    "up to date:"*) ;;
    *) log "$out" ;;
  esac
done
