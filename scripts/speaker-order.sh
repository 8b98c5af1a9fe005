#!/usr/bin/env bash
# Write crates/ferrolb/speaker.order: the functions a speaker runs, which release builds of the
# `ferrolb` binary place first and together (crates/ferrolb/build.rs says why).
#
# It builds the image's binary and runs it as the speaker of the speaker_scale benchmark twice:
# on a small cluster under valgrind's callgrind (start-up, watches, elections, announcing and
# withdrawing, heartbeats, churn: every function that runs, with its instruction count), then,
# when perf is installed, at (100, 10 000, 1 000) under `perf record` (what the first run
# misses: the code paths of CPU features valgrind hides, and of a large cluster). The list is
# callgrind's functions, most instructions first, then perf's others, then those of the
# earlier list that still exist, by linker symbol.
# Needs root (the benchmark's network namespaces) and valgrind. Run it after changes to the
# speaker, or after a toolchain, dependency or profile change (they rename symbols); names that
# no longer exist are skipped by the linker, so a stale list costs memory, never correctness.
#
# usage: scripts/speaker-order.sh [NODES SERVICES LB]   (the callgrind run; default: 10 300 30)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-10} services=${2:-300} lb=${3:-30}
command -v valgrind >/dev/null || { echo "speaker-order: valgrind is missing" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "speaker-order: needs root (network namespaces)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The image's binary, as scripts/build-release.sh builds it (its symbols' names depend on the
# flags and target of the build).
cp "$(scripts/build-release.sh)" "$work/ferrolb"
# SPEAKER_SCALE_BENCH: a speaker_scale bench binary already built (the benchmark only drives
# the speaker; its own code does not matter here).
bench=${SPEAKER_SCALE_BENCH:-$(cargo bench --locked --no-run -p ferrolb --bench speaker_scale --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*speaker_scale[^"]*\)".*/\1/p' | tail -1)}
[ -x "$bench" ] || { echo "speaker-order: no speaker_scale bench binary" >&2; exit 1; }

# run LABEL WRAPPER NODES SERVICES LB: the benchmark with WRAPPER as its speaker
run() {
  BENCH_EXES="$1=$2" BENCH_NODES=$3 BENCH_SERVICES=$4 BENCH_LB=$5 \
    BENCH_IDLE_SECS=5 BENCH_CHURN_SECS=5 BENCH_SAMPLES=6 BENCH_PROBE=arp,metrics \
    "$bench" --bench >>"$work/bench.log" 2>&1 || { cat "$work/bench.log" >&2; exit 1; }
}

printf '#!/bin/sh\nexec valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file=%s %s "$@"\n' \
  "$work/cg.out" "$work/ferrolb" >"$work/speaker-cg"
chmod +x "$work/speaker-cg"
run callgrind "$work/speaker-cg" "$nodes" "$services" "$lb"
[ -s "$work/cg.out" ] || { echo "speaker-order: callgrind wrote nothing" >&2; exit 1; }

: >"$work/perf.txt"
if command -v perf >/dev/null; then
  # Samples of the running code, and every page fault with the instruction that took it.
  printf '#!/bin/sh\nexec perf record -q -e cpu-clock/freq=4999/ -e page-faults/period=1/ -o %s %s "$@"\n' \
    "$work/perf.data" "$work/ferrolb" >"$work/speaker-perf"
  chmod +x "$work/speaker-perf"
  run perf "$work/speaker-perf" 100 10000 1000
  perf script -i "$work/perf.data" -F ip,sym,dso --no-demangle >"$work/perf.txt" 2>/dev/null || true
fi

# Each function's own instruction count, summed over its callgrind entries; the names are the
# binary's own symbols (callgrind compresses a repeated name to its number).
python3 - "$work/cg.out" "$work/perf.txt" "$work/ferrolb" crates/ferrolb/speaker.order <<'PY'
import re, subprocess, sys
cg, perf, exe, out = sys.argv[1:]
defined, resolvers = set(), []
for line in subprocess.run(["nm", "--defined-only", exe], capture_output=True, text=True, check=True).stdout.splitlines():
    parts = line.split()
    if len(parts) == 3 and parts[1] in "tTwWi":
        defined.add(parts[2])
        if parts[1] == "i":
            resolvers.append(parts[2])
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
seen, sampled = set(ran), set()
for line in open(perf, errors="replace"):
    m = re.match(r"\s*[0-9a-f]+ (\S+) \((\S+)\)", line)
    if m and m.group(2) == exe and m.group(1) in defined and m.group(1) not in seen:
        sampled.add(m.group(1))
ran += sorted(sampled)
# With glibc linked in, its start-up code runs every IFUNC resolver, and valgrind's CPU makes
# the string functions pick other variants than the machine does: every resolver, and every
# AVX / EVEX variant of a string function a run used, belong to the list.
variant = re.compile(r"^(__\w+?)_(?:evex|avx|sse|ssse3|erms)\w*$")
families = {m.group(1) for n in ran if (m := variant.match(n))}
ran += [n for n in resolvers if n not in seen and n not in sampled]
listed = set(ran)
ran += sorted(n for n in defined if (m := variant.match(n)) and m.group(1) in families
              and re.search(r"_(?:evex|avx)", n) and n not in listed)
# Functions an earlier list found that these runs did not: perf finds a function by a page
# fault it takes or a sample, and one placed among the listed ones takes no fault; keeping
# them lets each run add what the last layout revealed.
seen = set(ran)
try:
    earlier = list(dict.fromkeys(n for n in open(out).read().split() if n in defined and n not in seen))
except FileNotFoundError:
    earlier = []
ran += earlier
with open(out, "w") as f:
    f.write("".join(n + "\n" for n in ran))
print(f"speaker-order: {len(ran)} functions ({len(sampled)} seen by perf only, {len(earlier)} kept "
      f"from the earlier list), of {len(defined)} in the binary -> {out}")
PY
grep -E "announced after start|RSS at rest:" "$work/bench.log" || true
