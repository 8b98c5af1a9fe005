#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit + property + integration tests, and the
# network-namespace dataplane and end-to-end tests (those need root; without it they print
# why and skip, except under CI=true where they fail).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo clippy -p ferrolb --no-default-features (the image's binary, built without the lab)"
cargo clippy --locked -p ferrolb --no-default-features --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --no-fail-fast --lib --bins --tests
cargo test --locked --doc
echo "== cargo test --bench '*' (every bench once: criterion's test mode, the others a smoke run)"
cargo test --locked --bench '*'
