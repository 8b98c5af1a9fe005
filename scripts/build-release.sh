#!/usr/bin/env bash
# Build the `ferrolb` binary the image ships and print its path: release profile, without the
# default `lab` feature (no embedded API server, no plotting), and with the C library linked
# in on Linux GNU hosts (`crt-static`: a static PIE). A speaker then maps no shared library:
# the kernel maps library code up to 64 KiB around every page a process runs, so the parts of
# glibc a speaker uses kept ≈ 2.2 MiB of libc, libm and the loader resident on every node;
# linked in, they are a few hundred kilobytes placed with the rest of the speaker's code
# (crates/ferrolb/build.rs). Host names still resolve: glibc's own files and DNS lookups are
# part of the static library.
#
# usage: scripts/build-release.sh   (honours CARGO_TARGET_DIR; extra cargo flags via RUSTFLAGS)
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
flags=${RUSTFLAGS:-}
case "$host" in
  *-linux-gnu) flags="$flags -C target-feature=+crt-static" ;;
esac
# An explicit --target keeps the flag off build scripts and proc macros (they stay dynamic).
RUSTFLAGS="$flags" cargo build --release --locked -p ferrolb --no-default-features --bin ferrolb \
  --target "$host" >&2
bin="${CARGO_TARGET_DIR:-target}/$host/release/ferrolb"
# The functions crates/ferrolb/speaker.order lists that this binary no longer defines (renamed
# by a change to the speaker's crates, a toolchain or a dependency) lie scattered among the
# rest: a stale list costs resident memory on every node, up to 2 MiB at 10 000 VIPs.
if command -v nm >/dev/null 2>&1; then
  listed=$(grep -c . crates/ferrolb/speaker.order || true)
  found=$(comm -12 <(nm --defined-only "$bin" | awk 'NF >= 3 {print $3}' | sort -u) \
    <(grep . crates/ferrolb/speaker.order | sort -u) | wc -l)
  if [ "$found" -lt "$listed" ]; then
    echo "build-release: speaker.order is stale: $found of its $listed functions are in this binary;" \
      "rewrite it with scripts/speaker-order.sh before building an image" >&2
  fi
fi
echo "$bin"
