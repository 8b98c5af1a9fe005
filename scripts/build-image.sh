#!/usr/bin/env bash
# Build the ferrolb container image without a Docker engine: an OCI image layout made with
# umoci from a root filesystem holding only the binary, the shared libraries it links (none for
# the static binary scripts/build-release.sh builds), and a passwd entry for the non-root user.
# The Dockerfile builds the same image with Docker.
#
# usage: scripts/build-image.sh [BINARY] [OUT_DIR] [TAG]
#   BINARY   default: the binary scripts/build-release.sh builds
#   OUT_DIR  default: target/image/oci       (an OCI image layout; `skopeo copy oci:… docker://…` pushes it)
#   TAG      default: the crate version
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-}
out=${2:-target/image/oci}
tag=${3:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}

if [ -z "$bin" ]; then
  bin=$(scripts/build-release.sh)
fi
command -v umoci >/dev/null || { echo "build-image: umoci is missing (apt-get install umoci)" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$bin" "$rootfs/usr/local/bin/ferrolb"
strip "$rootfs/usr/local/bin/ferrolb" 2>/dev/null || true

# Only the libraries the binary links (glibc, libgcc_s; none when static), at the paths the
# loader expects.
{ ldd "$bin" 2>/dev/null || true; } | awk '/=>/ {print $3} /^[ \t]*\// {print $1}' | while read -r lib; do
  [ -f "$lib" ] || continue
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
printf 'root:x:0:0:root:/:/nonexistent\nnonroot:x:65534:65534:nonroot:/:/nonexistent\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65534:\n' >"$rootfs/etc/group"

rm -rf "$out"
mkdir -p "$(dirname "$out")"
umoci init --layout "$out"
umoci new --image "$out:$tag"
umoci insert --image "$out:$tag" "$rootfs" /
umoci config --image "$out:$tag" \
  --config.user 65534:65534 \
  --config.entrypoint /usr/local/bin/ferrolb \
  --config.cmd --help \
  --config.label org.opencontainers.image.title=ferrolb \
  --config.label org.opencontainers.image.version="$tag" \
  --architecture amd64 --os linux
umoci gc --layout "$out"
echo "build-image: $out:$tag"
