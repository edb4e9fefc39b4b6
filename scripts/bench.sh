#!/usr/bin/env bash
# Runs every benchmark in one go and writes BENCHMARKS.md (+ benchmarks.svg) at the
# workspace root, unattended: the criterion micro-benchmarks of each crate, the crypto bound
# (`openssl speed`), interleaved A/B ratios (JWT vs jsonwebtoken, issuance vs rcgen), the
# per-layer cost at concurrency 1, the load generator's scenarios (handshake full / hybrid /
# resumed; plain-tonic, plain-tonic-mtls, proxyless, envoy at each replica count, back to
# back), hostile load (`loadgen abuse`) and the soak (`loadgen soak`), then the report with
# the acceptance goals. ~20 min at the default knobs. Not part of ./ci.sh (which runs a
# smoke run of a few seconds per scenario: benches/tests/smoke.rs).
#
# Knobs (environment):
#   DURATION=5s WARMUP=1s          measurement window and warm-up per load point
#   CONCURRENCY=1,16,128           concurrent callers
#   REPLICAS=1,3,9                 replica counts for the bookstore scenarios
#   SERVER_THREADS=2               worker threads per server process and per Envoy
#   CRITERION_TIME=3               criterion measurement seconds per benchmark
#   SKIP_CRITERION=1               reuse the criterion results already in the target dir
#   LAYER_ROUNDS=10 LAYER_WINDOW=1s  per-layer cost: interleaved rounds, window per configuration
#   SOAK_DURATION=5m SOAK_CONCURRENCY=128 SOAK_REPLICAS=3   the soak
#   SKIP_SOAK=1 SKIP_ABUSE=1       leave those sections out
#   BENCH_NOTE="..."               a note on the conditions, printed in BENCHMARKS.md
#   QUICK=1                        a short run to check the pipeline (0.5 s points, 1 s
#                                  criterion, 20 s soak, small floods) — not figures to publish
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-tools.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export MTLS_REQUIRE_ENVOY=1
abuse_args=()
if [ "${QUICK:-0}" = 1 ]; then
  DURATION="${DURATION:-500ms}"; WARMUP="${WARMUP:-200ms}"; CRITERION_TIME="${CRITERION_TIME:-1}"
  SOAK_DURATION="${SOAK_DURATION:-20s}"; LAYER_ROUNDS="${LAYER_ROUNDS:-3}"; LAYER_WINDOW="${LAYER_WINDOW:-300ms}"
  abuse_args=(--idle 200 --slowloris 40 --garbage 40 --trials 3 --flood-duration 2s)
  soak_args=(--warmup 2s --sample-every 2s)
else
  soak_args=(--warmup 10s --sample-every 10s)
fi
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
CONCURRENCY="${CONCURRENCY:-1,16,128}"
REPLICAS="${REPLICAS:-1,3,9}"
SERVER_THREADS="${SERVER_THREADS:-2}"
CRITERION_TIME="${CRITERION_TIME:-3}"
LAYER_ROUNDS="${LAYER_ROUNDS:-10}"
LAYER_WINDOW="${LAYER_WINDOW:-1s}"
SOAK_DURATION="${SOAK_DURATION:-5m}"
SOAK_CONCURRENCY="${SOAK_CONCURRENCY:-128}"
SOAK_REPLICAS="${SOAK_REPLICAS:-3}"
export BENCH_NOTE="${BENCH_NOTE:-}"
# The raw results are kept next to the report, so it can be re-rendered without
# re-measuring (the last command of this script).
out_dir=benches/results
mkdir -p "$out_dir"
start=$(date +%s)
loadgen="$CARGO_TARGET_DIR/release/loadgen"

echo "==> building the load generator (release)"
cargo build --release -p mtls-benches --bins

if [ "${SKIP_CRITERION:-0}" != 1 ]; then
  echo "==> criterion micro-benchmarks (${CRITERION_TIME}s each)"
  crit=(-- --warm-up-time 1 --measurement-time "$CRITERION_TIME" --noplot)
  cargo bench -p mtls-certs --bench issuance "${crit[@]}"
  cargo bench -p mtls-core --bench handshake --bench kx --bench san --bench authorize "${crit[@]}"
  cargo bench -p mtls-jwt --bench validate "${crit[@]}"
  cargo bench -p mtls-tonic --bench balanced "${crit[@]}"
fi

echo "==> crypto bound: openssl speed (P-256 ECDSA, X25519)"
"$loadgen" crypto-bound --out "$out_dir/crypto.json"

echo "==> interleaved A/B: JWT validation vs jsonwebtoken, leaf issuance vs rcgen"
"$loadgen" ab --out "$out_dir/ab.json"

echo "==> per-layer cost at concurrency 1 (${LAYER_ROUNDS} rounds of ${LAYER_WINDOW})"
"$loadgen" layers --rounds "$LAYER_ROUNDS" --window "$LAYER_WINDOW" \
  --server-threads "$SERVER_THREADS" --out "$out_dir/layers.json"

echo "==> load generator: handshake, plain-tonic, plain-tonic-mtls, proxyless, envoy (${WARMUP} + ${DURATION} per point)"
"$loadgen" run --scenario all \
  --concurrency "$CONCURRENCY" --replicas "$REPLICAS" \
  --warmup "$WARMUP" --duration "$DURATION" --server-threads "$SERVER_THREADS" \
  --out "$out_dir/loadgen.json"

report_args=()
if [ "${SKIP_ABUSE:-0}" != 1 ]; then
  echo "==> hostile load: accept-path and handshake floods, ours vs Envoy"
  "$loadgen" abuse "${abuse_args[@]}" --server-threads "$SERVER_THREADS" --out "$out_dir/abuse.json"
  report_args+=(--abuse "$out_dir/abuse.json")
fi
if [ "${SKIP_SOAK:-0}" != 1 ]; then
  echo "==> soak: ${SOAK_DURATION} at concurrency ${SOAK_CONCURRENCY} over ${SOAK_REPLICAS} replicas"
  "$loadgen" soak --replicas "$SOAK_REPLICAS" --concurrency "$SOAK_CONCURRENCY" \
    --duration "$SOAK_DURATION" "${soak_args[@]}" --server-threads "$SERVER_THREADS" \
    --out "$out_dir/soak.json"
  report_args+=(--soak "$out_dir/soak.json")
fi

echo "==> BENCHMARKS.md"
"$CARGO_TARGET_DIR/release/bench-report" \
  --results "$out_dir/loadgen.json" "$out_dir/ab.json" "$out_dir/crypto.json" "$out_dir/layers.json" \
  "${report_args[@]}" \
  --criterion "$CARGO_TARGET_DIR/criterion" \
  --out BENCHMARKS.md --chart benchmarks.svg \
  --note "$BENCH_NOTE"
echo "==> done in $(( $(date +%s) - start )) s: BENCHMARKS.md, benchmarks.svg, raw JSON in $out_dir/"
