#!/usr/bin/env bash
# Every benchmark; each prints a table and writes JSON into bench-output/.
set -euo pipefail
mkdir -p bench-output
export TF_CPP_MIN_LOG_LEVEL=2
for b in benchmarks/bench_*.py; do
  echo "== $b"
  python "$b" --out "bench-output/$(basename "$b" .py | sed 's/^bench_//').json"
done
