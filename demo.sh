#!/usr/bin/env bash
# The main job (until the bookstore mesh lands): build `mtls` and walk the quick start.
set -euo pipefail
cd "$(dirname "$0")"
cargo build -q --release -p mtls-cli
mtls="$PWD/target/release/mtls"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "working in $dir"
"$mtls" --help
