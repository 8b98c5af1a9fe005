#!/usr/bin/env bash
# Write crates/ferrolb/speaker.order: the functions a speaker runs, hottest first, which release
# builds of the `ferrolb` binary place first and together (crates/ferrolb/build.rs says why).
#
# It builds the image's binary, runs it as the speaker of the speaker_scale benchmark (a small
# cluster: start-up, watches, elections, announcing and withdrawing, heartbeats, churn) under
# valgrind's callgrind, and lists every function that ran by its linker symbol. Needs root
# (the benchmark's network namespaces) and valgrind. Run it after changes to the speaker, or
# after a toolchain or dependency upgrade (both rename symbols); names that no longer exist are
# ignored by the linker, so a stale list costs memory, never correctness.
#
# usage: scripts/speaker-order.sh [NODES SERVICES LB]   (default: 10 300 30)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-10} services=${2:-300} lb=${3:-30}
command -v valgrind >/dev/null || { echo "speaker-order: valgrind is missing" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "speaker-order: needs root (network namespaces)" >&2; exit 2; }

target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The image's binary first: the benchmark's build below overwrites target/release/ferrolb.
cargo build --release --locked -p ferrolb --no-default-features --bin ferrolb
cp "$target/release/ferrolb" "$work/ferrolb"
bench=$(cargo bench --locked --no-run -p ferrolb --bench speaker_scale --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*speaker_scale[^"]*\)".*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "speaker-order: no speaker_scale bench binary" >&2; exit 1; }

cat >"$work/speaker" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file=$work/cg.out "$work/ferrolb" "\$@"
EOF
chmod +x "$work/speaker"
BENCH_EXES="order=$work/speaker" BENCH_NODES=$nodes BENCH_SERVICES=$services BENCH_LB=$lb \
  BENCH_IDLE_SECS=5 BENCH_CHURN_SECS=5 BENCH_SAMPLES=6 BENCH_PROBE=arp,metrics \
  "$bench" --bench >"$work/bench.log" 2>&1 || { cat "$work/bench.log" >&2; exit 1; }
[ -s "$work/cg.out" ] || { echo "speaker-order: callgrind wrote nothing" >&2; exit 1; }

# Each function's own instruction count, summed over its callgrind entries; the names are the
# binary's own symbols (callgrind compresses a repeated name to its number).
python3 - "$work/cg.out" "$work/ferrolb" crates/ferrolb/speaker.order <<'PY'
import re, subprocess, sys
cg, exe, out = sys.argv[1:]
defined = set()
for line in subprocess.run(["nm", "--defined-only", exe], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwW":
        defined.add(parts[2])
names, cost, current, in_call = {}, {}, None, False
for line in open(cg, errors="replace"):
    line = line.rstrip("\n")
    m = re.match(r"^fn=\((\d+)\)(?: (.*))?$", line)
    if m:
        if m.group(2):
            names[m.group(1)] = m.group(2)
        current, in_call = names.get(m.group(1)), False
        continue
    m = re.match(r"^c(?:fn|fi|fe|ob)=\((\d+)\)(?: (.*))?$", line)
    if m:
        if line.startswith("cfn=") and m.group(2):
            names[m.group(1)] = m.group(2)
        continue
    if line.startswith("calls="):
        in_call = True
        continue
    if current and line[:1] in "0123456789+-*":
        if in_call:
            in_call = False  # the line after calls= is the callee's inclusive cost
            continue
        fields = line.split()
        if len(fields) >= 2:
            cost[current] = cost.get(current, 0) + int(fields[1])
ran = sorted((n for n in cost if n in defined), key=lambda n: (-cost[n], n))
with open(out, "w") as f:
    f.write("".join(n + "\n" for n in ran))
print(f"speaker-order: {len(ran)} functions that ran, of {len(defined)} in the binary -> {out}")
PY
grep -E "announced after start|RSS at rest:" "$work/bench.log" || true
