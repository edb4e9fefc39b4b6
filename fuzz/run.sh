#!/usr/bin/env bash
# Runs fuzz targets one after another (nice 19; the machine is shared), each until
# MAX_TIME seconds or RUNS executions, whichever comes first, with bounded memory.
# Usage: ./run.sh [target...]   (default: every target). Logs in logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")"
MAX_TIME=${MAX_TIME:-600}
RUNS=${RUNS:-10000000}
RSS_MB=${RSS_MB:-2048}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(ls fuzz_targets | sed 's/\.rs$//')
mkdir -p logs
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  dict=()
  [ -f "dict/$t.dict" ] && dict=(-dict="dict/$t.dict")
  nice -n 19 cargo +nightly fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
    "${dict[@]}" -rss_limit_mb="$RSS_MB" -malloc_limit_mb="$RSS_MB" -timeout=10 \
    -max_total_time="$MAX_TIME" -runs="$RUNS" -print_final_stats=1 >"logs/$t.log" 2>&1 \
    || echo "$t: exit $? (see logs/$t.log and artifacts/$t/)"
  echo "$t: $(grep -E '^(Done|stat::number_of_executed_units)' "logs/$t.log" | tr '\n' ' ') corpus $(ls "corpus/$t" | wc -l)"
done
