#!/usr/bin/env bash
# Set up a demo next to a real registry and run retentiond's main job on it:
# installs Docker, Debian's docker-registry and skopeo, starts a registry container
# (retentiond-demo, on 127.0.0.1:${DEMO_PORT:-5000}, storage in ./demo/registry), pushes sample
# images, writes demo/retentiond.yaml (using the example policies in policies/), then runs
# `retentiond check`, `plan`, one maintenance (`apply --yes`: freeze, delete, GC, restart,
# verify) and `verify`. Run it again to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
port=${DEMO_PORT:-5000}
bash scripts/start-docker.sh
if [ ! -x .venv/bin/retentiond ]; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet -e '.[test]' 2>/tmp/retentiond-pip.log || { cat /tmp/retentiond-pip.log; exit 1; }
fi
docker rm -f retentiond-demo >/dev/null 2>&1 || true
rm -rf demo && mkdir -p demo/registry demo/state
docker run -d --name retentiond-demo -p "127.0.0.1:${port}:5000" \
  -v "$PWD/demo/registry:/var/lib/registry" retentiond-test/registry:2.8.2 >/dev/null
.venv/bin/python - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=1)
        break
    except OSError:
        time.sleep(0.2)
PY
echo "pushing sample images into the demo registry on 127.0.0.1:${port} ..."
.venv/bin/python -m scripts.demo "$PWD/demo/registry" "$port"
cat > demo/retentiond.yaml <<YAML
registry:
  root: $PWD/demo/registry
  url: http://127.0.0.1:${port}
runtime:
  kind: docker
  container: retentiond-demo
policies: [../policies/]
state_dir: $PWD/demo/state
log:
  format: console
YAML
.venv/bin/retentiond --config demo/retentiond.yaml check
.venv/bin/retentiond --config demo/retentiond.yaml plan --quiet
.venv/bin/retentiond --config demo/retentiond.yaml apply --yes
.venv/bin/retentiond --config demo/retentiond.yaml verify
