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
echo "${CARGO_TARGET_DIR:-target}/$host/release/ferrolb"
