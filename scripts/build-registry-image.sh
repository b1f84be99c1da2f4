#!/usr/bin/env bash
# Build a tiny "registry:2"-like image FROM scratch out of Debian's docker-registry binary.
#
#   scripts/build-registry-image.sh [TAG]      (default: retentiond-test/registry:2.8.2)
#
# The image holds /usr/bin/docker-registry as /bin/registry, the shared libraries that ldd
# reports for it (at the same paths, so it works on x86_64 and aarch64 alike) and a config at
# /etc/docker/registry/config.yml. Idempotent: the docker build cache makes a rebuild a no-op.
set -euo pipefail

TAG="${1:-retentiond-test/registry:2.8.2}"
BIN="${REGISTRY_BIN:-/usr/bin/docker-registry}"

if [[ ! -x "$BIN" ]]; then
  echo "error: $BIN not found; install it with: apt-get install docker-registry" >&2
  exit 1
fi

ctx="$(mktemp -d /tmp/retentiond-registry-image.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT

install -D -m 0755 "$BIN" "$ctx/rootfs/bin/registry"

# Every absolute path ldd prints: "libc.so.6 => /lib/.../libc.so.6 (0x...)" and
# "/lib/ld-linux-....so.1 (0x...)". linux-vdso has no path and is skipped.
mapfile -t libs < <(ldd "$BIN" | grep -oE '/[^ ]+' || true)
if [[ ${#libs[@]} -eq 0 ]]; then
  echo "note: $BIN is statically linked" >&2
fi
for lib in "${libs[@]}"; do
  # Copy the file the path resolves to, under the path the loader asks for.
  install -D -m 0755 "$(readlink -f "$lib")" "$ctx/rootfs$lib"
done

mkdir -p "$ctx/rootfs/etc/docker/registry" "$ctx/rootfs/var/lib/registry" "$ctx/rootfs/tmp"
cat > "$ctx/rootfs/etc/docker/registry/config.yml" <<'YAML'
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

cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY rootfs/ /
VOLUME ["/var/lib/registry"]
EXPOSE 5000
ENTRYPOINT ["/bin/registry"]
CMD ["serve", "/etc/docker/registry/config.yml"]
DOCKERFILE

# Fixed mtimes: the same inputs give a build-cache hit (and the same image id) every time.
find "$ctx/rootfs" -exec touch -h -d '2000-01-01T00:00:00Z' {} +

# The legacy builder: Debian's docker.io has no buildx, and it is enough for COPY.
DOCKER_BUILDKIT=0 docker build -q -t "$TAG" "$ctx" >/dev/null 2>"$ctx/build.err" || {
  cat "$ctx/build.err" >&2
  echo "error: docker build of $TAG failed" >&2
  exit 1
}
echo "built $TAG ($(docker image inspect -f '{{.Id}}' "$TAG"))"
