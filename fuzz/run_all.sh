#!/usr/bin/env bash
# Runs fuzz targets one after another (the machine has 2 shared cores), 10M executions each.
# Usage: fuzz/run_all.sh [extra cargo-fuzz flags, e.g. -s none --target-dir target/nosan] -- target...
set -u
cd "$(dirname "$0")"
flags=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do flags+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
mkdir -p logs
for t in "$@"; do
  mkdir -p "corpus/$t"
  RUSTC_BOOTSTRAP=1 cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -runs=10000000 -print_final_stats=1 > "logs/$t.log" 2>&1
  echo "exit $?" >> "logs/$t.log"
done
