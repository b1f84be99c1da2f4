#!/usr/bin/env bash
# Build a registry test image FROM scratch, packaged like the official registry:2 / registry:3.
#
#   scripts/build-registry-image.sh [2.8.2|3.1.1] [TAG]    (default: 2.8.2,
#                                                           TAG retentiond-test/registry:VERSION)
#   scripts/build-registry-image.sh TAG                    (2.8.2 under another tag, as before)
#
# Layout of both, like the official images:
#   /bin/registry     2.8.2: Debian's /usr/bin/docker-registry (REGISTRY_BIN overrides it);
#                     3.1.1: the binary scripts/build-registry-v3.sh builds and caches
#                     (RETENTIOND_TEST_REGISTRY3_BIN overrides it);
#                     plus the shared libraries ldd reports for it, at the same paths (so it
#                     works on x86_64 and aarch64 alike; none for a static binary)
#   /bin/busybox      Debian's busybox-static, with /bin/sh -> busybox
#   /entrypoint.sh    upstream's docker-entrypoint.sh: a *.yml/*.yaml first argument becomes
#                     `registry serve ...`, serve/garbage-collect/help/-* become `registry ...`,
#                     anything else is run as is
#   config            /etc/docker/registry/config.yml (2.8.2), /etc/distribution/config.yml
#                     (3.1.1): filesystem storage at /var/lib/registry, delete enabled,
#                     inmemory blob descriptor cache, :5000, no auth
#   ENTRYPOINT ["/entrypoint.sh"], CMD [that config path], VOLUME /var/lib/registry, EXPOSE 5000
#
# Idempotent: fixed mtimes and modes make a rebuild a docker build-cache hit (same image id).
set -euo pipefail
umask 022

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

VERSION=2.8.2
if [[ $# -gt 0 && "$1" =~ ^[0-9]+\.[0-9]+ ]]; then
  VERSION="$1"
  shift
fi
TAG="${1:-retentiond-test/registry:$VERSION}"

case "$VERSION" in
  2.8.2)
    BIN="${REGISTRY_BIN:-/usr/bin/docker-registry}"
    CONFIG=/etc/docker/registry/config.yml
    if [[ ! -x "$BIN" ]]; then
      echo "error: $BIN not found; install it with: apt-get install docker-registry" >&2
      exit 1
    fi
    ;;
  3.1.1)
    CONFIG=/etc/distribution/config.yml
    if [[ -n "${RETENTIOND_TEST_REGISTRY3_BIN:-}" ]]; then
      BIN="$RETENTIOND_TEST_REGISTRY3_BIN"
    else
      BIN="$(bash "$here/build-registry-v3.sh")"
    fi
    if [[ ! -x "$BIN" ]]; then
      echo "error: registry v3 binary $BIN not found (scripts/build-registry-v3.sh builds it)" >&2
      exit 1
    fi
    ;;
  *)
    echo "error: unsupported registry version $VERSION (2.8.2 or 3.1.1)" >&2
    exit 2
    ;;
esac

BUSYBOX="${BUSYBOX_BIN:-/bin/busybox}"
if [[ ! -x "$BUSYBOX" ]] || ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "error: no static $BUSYBOX; install it with: apt-get install busybox-static" >&2
  exit 1
fi

ctx="$(mktemp -d /tmp/retentiond-registry-image.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir "$ctx/context"

install -D -m 0755 "$BIN" "$root/bin/registry"
install -D -m 0755 "$BUSYBOX" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

# Every absolute path ldd prints: "libc.so.6 => /lib/.../libc.so.6 (0x...)" and
# "/lib/ld-linux-....so.1 (0x...)". linux-vdso has no path and is skipped; a static binary
# has none ("not a dynamic executable").
mapfile -t libs < <(ldd "$BIN" 2>/dev/null | grep -oE '/[^ ]+' || true)
for lib in "${libs[@]}"; do
  # Copy the file the path resolves to, under the path the loader asks for.
  install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done

# Upstream's docker-entrypoint.sh (distribution-library-image), unchanged in behaviour.
cat > "$root/entrypoint.sh" <<'SH'
#!/bin/sh

set -e

case "$1" in
    *.yaml|*.yml) set -- registry serve "$@" ;;
    serve|garbage-collect|help|-*) set -- registry "$@" ;;
esac

exec "$@"
SH
chmod 0755 "$root/entrypoint.sh"

mkdir -p "$root$(dirname "$CONFIG")" "$root/var/lib/registry" "$root/tmp"
chmod 1777 "$root/tmp"
cat > "$root$CONFIG" <<'YAML'
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: /var/lib/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YAML
chmod 0644 "$root$CONFIG"

cat > "$ctx/context/Dockerfile" <<DOCKERFILE
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["/entrypoint.sh"]
CMD ["$CONFIG"]
DOCKERFILE

# The root filesystem goes in as one reproducible tar (ADD unpacks it): the legacy builder's
# cache key for `COPY dir/ /` is the directory entry's header alone, so a changed file inside
# (another binary, another config) would silently reuse the old layer. A tar's key is its
# content; fixed mtimes and owners make the same inputs a cache hit (the same image id).
tar --sort=name --mtime='2000-01-01 00:00:00Z' --owner=0 --group=0 --numeric-owner \
  -C "$root" -cf "$ctx/context/rootfs.tar" .
before="$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)"
# The legacy builder: Debian's docker.io has no buildx, and it is enough for ADD.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$ctx/context" >/dev/null 2>"$ctx/build.err" || {
  cat "$ctx/build.err" >&2
  echo "error: docker build of $TAG failed" >&2
  exit 1
}
after="$(docker image inspect -f '{{.Id}}' "$TAG")"
if [[ "$before" == "$after" ]]; then
  echo "up to date: $TAG ($after)"
else
  echo "built $TAG ($after) from $BIN"
fi
