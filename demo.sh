#!/usr/bin/env bash
# The `mtls` CLI quick start of the README (replacing the cfssl recipe), in a temp dir.
# (The main job is `cargo run --release --bin bookstore-mesh`.)
set -euo pipefail
cd "$(dirname "$0")"
cargo build -q --release -p mtls-cli
mtls="$PWD/target/release/mtls"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "working in $dir"
fixtures="$PWD/mtls-certs/tests/fixtures/cfssl"
if [ -n "${CARGO_TARGET_DIR:-}" ]; then mtls="$CARGO_TARGET_DIR/release/mtls"; fi
cd "$dir"

step() { printf '\n==> %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

step "a root CA (pathlen 1, 10 years) and an intermediate (pathlen 0, 5 years)"
run "$mtls" ca init --out root --cn "Mesh Root"
run "$mtls" ca intermediate --ca root --out int --cn "Mesh Issuing"

step "leaves by profile: server, client, SPIFFE SVID (NAME.pem = leaf + intermediate)"
run "$mtls" cert issue --ca int --out certs --name server --profile server --san bookstore.local --san 127.0.0.1
run "$mtls" cert issue --ca int --out certs --name client --profile client --san app-internal-api
run "$mtls" cert issue --ca int --out certs --name bookstore --profile svid \
    --spiffe-id spiffe://mesh.internal/ns/shop/sa/bookstore --ttl 1h

step "inspect, verify (rustls-webpki), renewal check"
run "$mtls" cert inspect certs/bookstore.pem
run "$mtls" cert verify --ca-file root/ca.pem certs/server.pem
run "$mtls" cert renew-check certs/bookstore.pem

step "keys are 0600 and never overwritten without --force"
ls -l certs/
if "$mtls" cert issue --ca int --out certs --name server --profile server --san bookstore.local; then
    echo "unexpected: key overwritten" >&2; exit 1
fi

step "the cfssl recipe's inputs, unchanged (cfssl initca + gencert | cfssljson -bare)"
run "$mtls" cfssl initca "$fixtures/ca-csr.json" --out pki
run "$mtls" cfssl gencert --ca pki/ca.pem --ca-key pki/ca-key.pem --config "$fixtures/server-config.json" "$fixtures/server.json" --out pki
run "$mtls" cfssl gencert --ca pki/ca.pem --ca-key pki/ca-key.pem --config "$fixtures/client-config.json" "$fixtures/client.json" --out pki
ls pki/
openssl x509 -in pki/client.pem -noout -ext subjectAltName,keyUsage,extendedKeyUsage

step "openssl verifies every chain"
run openssl verify -CAfile pki/ca.pem pki/server.pem pki/client.pem
run openssl verify -CAfile root/ca.pem -untrusted int/ca.pem certs/server.pem certs/client.pem certs/bookstore.pem
echo
echo "demo finished: all chains verified"
