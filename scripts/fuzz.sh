#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a bounded time (scripts/test.sh runs this after pytest).
#
#   bash scripts/fuzz.sh                  # each target FUZZ_SECONDS (default 20) seconds
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh manifest    # one target, longer
#
# Targets: manifest (parse_manifest, parse_created), policy (load_policies), config
# (load_config). Each starts from a copy of its seed corpus fuzz/corpus/<target>/ (the copy
# grows, the committed corpus does not) with the dictionary in fuzz/dicts/. atheris (libFuzzer)
# runs them when it is installed; otherwise fuzz/harness.py's plain mutation loop does
# (RETENTIOND_FUZZ_ENGINE=random forces it).
#
# Fails (exit 1) when a target raises an exception its contract does not allow, runs one input
# longer than FUZZ_TIMEOUT (default 10) seconds, or goes over FUZZ_RSS_MB (default 2048) of
# memory: it prints the traceback, the input that did it (and where it is kept) and the
# command that reproduces it.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PY="${PYTHON:-.venv/bin/python}"
seconds="${FUZZ_SECONDS:-20}"
per_input="${FUZZ_TIMEOUT:-10}"
rss_mb="${FUZZ_RSS_MB:-2048}"
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(manifest policy config)
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/retentiond-fuzz.XXXXXX")"
export RETENTIOND_FUZZ_TMP="$work"
failed=()

engine() {
  if [[ "${RETENTIOND_FUZZ_ENGINE:-}" != random ]] && "$PY" -c 'import atheris' 2>/dev/null; then
    echo "atheris"
  else
    echo "plain mutation loop (atheris not installed)"
  fi
}

show_reproducer() {
  local target="$1" artifact="$2"
  echo "---- reproducer: $artifact ($(stat -c %s "$artifact") bytes), as a Python bytes literal:"
  "$PY" -c 'import sys; d = open(sys.argv[1], "rb").read(); print(repr(d[:2000]) + (" ... (cut)" if len(d) > 2000 else ""))' "$artifact"
  echo "---- base64 (decode with: base64 -d > input):"
  head -c 4096 "$artifact" | base64 -w 100
  echo "---- run it again: $PY fuzz/fuzz_${target}.py -timeout=$per_input $artifact"
}

run_target() {
  local target="$1" dict=yaml
  [[ "$target" == manifest ]] && dict=manifest
  local corpus="$work/corpus-$target" artifacts="$work/artifacts-$target/" log="$work/$target.log"
  mkdir -p "$corpus" "$artifacts"
  cp fuzz/corpus/"$target"/* "$corpus"/
  local status=0 started=$SECONDS
  # libFuzzer stops itself after -max_total_time; the outer timeout is a guard against a hang
  # that even its -timeout could not end
  timeout --kill-after=10 "$((seconds + per_input + 60))" \
    "$PY" "fuzz/fuzz_${target}.py" \
    -max_total_time="$seconds" -timeout="$per_input" -rss_limit_mb="$rss_mb" -seed=1 \
    -dict="fuzz/dicts/${dict}.dict" -artifact_prefix="$artifacts" -print_final_stats=1 \
    "$corpus" >"$log" 2>&1 || status=$?
  local runs
  runs="$(grep -oE 'number_of_executed_units: *[0-9]+|Done [0-9]+ runs' "$log" | grep -oE '[0-9]+' | tail -1 || true)"
  local found=("$artifacts"*)
  if [[ $status -eq 0 && ! -e "${found[0]}" ]]; then
    echo "fuzz $target: ok, ${runs:-?} inputs in $((SECONDS - started))s"
    return 0
  fi
  failed+=("$target")
  echo "fuzz $target: FAILED (exit $status) after $((SECONDS - started))s; log: $log"
  grep -vE '^(#[0-9]+|INFO:|WARNING: Failed to find function)' "$log" | tail -60
  for artifact in "${found[@]}"; do
    [[ -e "$artifact" ]] && show_reproducer "$target" "$artifact"
  done
  return 0
}

echo "fuzzing with $(engine): ${targets[*]}, ${seconds}s each"
for target in "${targets[@]}"; do
  if [[ ! -f "fuzz/fuzz_${target}.py" ]]; then
    echo "no fuzz target fuzz/fuzz_${target}.py" >&2
    exit 2
  fi
  run_target "$target"
done

# the plain closing line CI reads: one per target
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzzing found a bug in: ${failed[*]} (inputs and logs kept in $work)" >&2
  exit 1
fi
rm -rf "$work"
