#!/usr/bin/env bash
# Builds the publishable crates' docs the way docs.rs does (nightly rustdoc, `--cfg docsrs`,
# every feature: `[package.metadata.docs.rs]` of each crate) and checks that items behind a
# feature are labelled with it ("Available on crate feature `x` only"), so docs.rs shows what
# a reader has to turn on.
#
# Needs `cargo +nightly`: the crates enable `feature(doc_cfg)` under `docsrs`, which also
# labels every `#[cfg(feature = ...)]` item by itself (nightly merged `doc_auto_cfg` into
# `doc_cfg` in 2025). Our crates only (`--no-deps`), into a subdirectory of the target
# directory so the stable `cargo doc` output is left alone.
#
# Usage: scripts/docsrs-check.sh   (exits non-zero naming the page and the label it missed)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "docsrs-check: cargo +nightly is not installed; cannot build as docs.rs does" >&2
  exit 2
fi

target="${CARGO_TARGET_DIR:-$PWD/target}/docsrs"
crates=(mtls-identity mtls-certs mtls-core mtls-jwt mtls-tonic mtls-agent mtls-cli)

# Each crate's docs.rs settings must be there: all features and the docsrs cfg (mtls-cli is a
# binary only, which docs.rs does not document). python3: ci.sh's tools install it.
cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
crates = sys.argv[1:]
bad = 0
for p in json.load(sys.stdin)["packages"]:
    if p["name"] not in crates or p["name"] == "mtls-cli":
        continue
    docsrs = ((p.get("metadata") or {}).get("docs") or {}).get("rs") or {}
    args = docsrs.get("rustdoc-args") or []
    if docsrs.get("all-features") is not True or "--cfg" not in args or "docsrs" not in args:
        manifest = p["manifest_path"]
        print(f"docsrs-check: {manifest}: expected [package.metadata.docs.rs] all-features = "
              f"true and rustdoc-args = [\"--cfg\", \"docsrs\"], found {docsrs}", file=sys.stderr)
        bad = 1
sys.exit(bad)
' "${crates[@]}"

args=()
for crate in "${crates[@]}"; do args+=(-p "$crate"); done
RUSTDOCFLAGS="--cfg docsrs" cargo +nightly doc "${args[@]}" --no-deps --all-features --locked \
  --target-dir "$target"

# Known gated items: page (under doc/) and the feature its first label must name.
checks=(
  "mtls_identity/struct.LeafFacts.html x509"
  "mtls_identity/fn.parse_certificate.html x509"
  "mtls_identity/source/struct.Source.html source"
  "mtls_certs/cfssl/index.html cfssl"
  "mtls_certs/cfssl/fn.gencert.html cfssl"
  "mtls_core/struct.WorkloadApiSource.html workload-api"
  "mtls_core/struct.WorkloadApiEndpoint.html workload-api"
  "mtls_core/struct.FederatedTrustSource.html federation"
  "mtls_jwt/struct.RemoteJwks.html remote"
  "mtls_jwt/struct.KeySet.html remote"
  "mtls_tonic/balance/index.html balance"
  "mtls_tonic/jwt/index.html jwt"
  "mtls_tonic/testing/index.html testing"
  "mtls_tonic/metrics/struct.CallMetricsBody.html metrics"
  "mtls_tonic/client/struct.WorkloadJwtToken.html workload-api"
)
failed=0
for check in "${checks[@]}"; do
  read -r page feature <<<"$check"
  file="$target/doc/$page"
  if [ ! -f "$file" ]; then
    echo "docsrs-check: expected the page $page (feature $feature), it was not generated" >&2
    failed=1
    continue
  fi
  # rustdoc: <div class="stab portability">Available on <strong>crate feature <code>x</code>
  # </strong> only.</div>; the first one on an item's page is the item's own (or, on KeySet,
  # its first gated method's).
  seen=$(grep -o 'Available on <strong>crate feature <code>[^<]*</code>' "$file" | head -1 |
    sed 's/.*<code>\(.*\)<\/code>/\1/' || true)
  if [ "$seen" != "$feature" ]; then
    found="no feature label"
    [ -n "$seen" ] && found="the label for feature $seen"
    echo "docsrs-check: $page: expected the label \"Available on crate feature $feature only\"," \
      "found $found" >&2
    failed=1
  fi
done
if [ "$failed" != 0 ]; then
  echo "docsrs-check: gated items are not labelled; each crate needs" \
    "#![cfg_attr(docsrs, feature(doc_cfg))] (or #[cfg_attr(docsrs, doc(cfg(feature = ...)))])" >&2
  exit 1
fi
echo "docsrs-check: ${#checks[@]} gated items labelled with their feature in ${#crates[@]} crates"
