#!/usr/bin/env bash
# Runs every benchmark in one go and writes BENCHMARKS.md (+ benchmarks.svg) at the
# workspace root: the criterion micro-benchmarks of each crate, interleaved A/B ratios
# (JWT vs jsonwebtoken, issuance vs rcgen), then the load generator's scenarios (handshake, plain-tonic, proxyless, envoy) at each concurrency and replica
# count, then the report with pairwise ratios. Not part of ./ci.sh (which runs a smoke
# run of a few seconds: benches/tests/smoke.rs).
#
# Knobs (environment):
#   DURATION=5s WARMUP=1s          measurement window and warm-up per load point
#   CONCURRENCY=1,16,128           concurrent callers
#   REPLICAS=1,3,9                 replica counts for proxyless and envoy
#   SERVER_THREADS=2               worker threads per server process and per Envoy
#   CRITERION_TIME=3               criterion measurement seconds per benchmark
#   SKIP_CRITERION=1               reuse the criterion results already in the target dir
#   BENCH_NOTE="..."               a note on the conditions, printed in BENCHMARKS.md
#   QUICK=1                        a short run to check the pipeline (0.5 s points, 1 s criterion)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-test-tools.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export MTLS_REQUIRE_ENVOY=1
if [ "${QUICK:-0}" = 1 ]; then
  DURATION="${DURATION:-500ms}"; WARMUP="${WARMUP:-200ms}"; CRITERION_TIME="${CRITERION_TIME:-1}"
fi
DURATION="${DURATION:-5s}"
WARMUP="${WARMUP:-1s}"
CONCURRENCY="${CONCURRENCY:-1,16,128}"
REPLICAS="${REPLICAS:-1,3,9}"
SERVER_THREADS="${SERVER_THREADS:-2}"
CRITERION_TIME="${CRITERION_TIME:-3}"
# The raw points are kept next to the report, so it can be re-rendered without re-measuring:
#   cargo run --release -p mtls-benches --bin bench-report -- \
#       --results benches/results/loadgen.json benches/results/ab.json \
#       --criterion "$CARGO_TARGET_DIR/criterion"
out_dir=benches/results
mkdir -p "$out_dir"
start=$(date +%s)

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

echo "==> interleaved A/B: JWT validation vs jsonwebtoken, leaf issuance vs rcgen"
"$CARGO_TARGET_DIR/release/loadgen" ab --out "$out_dir/ab.json"

echo "==> load generator: handshake, plain-tonic, proxyless, envoy (${WARMUP} + ${DURATION} per point)"
"$CARGO_TARGET_DIR/release/loadgen" run --scenario all \
  --concurrency "$CONCURRENCY" --replicas "$REPLICAS" \
  --warmup "$WARMUP" --duration "$DURATION" --server-threads "$SERVER_THREADS" \
  --out "$out_dir/loadgen.json"

echo "==> BENCHMARKS.md"
"$CARGO_TARGET_DIR/release/bench-report" \
  --results "$out_dir/loadgen.json" "$out_dir/ab.json" \
  --criterion "$CARGO_TARGET_DIR/criterion" \
  --out BENCHMARKS.md --chart benchmarks.svg \
  --note "${BENCH_NOTE:-}"
echo "==> done in $(( $(date +%s) - start )) s: BENCHMARKS.md, benchmarks.svg, raw JSON in $out_dir/loadgen.json"
