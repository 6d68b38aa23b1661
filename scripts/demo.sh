#!/usr/bin/env bash
# Every stage that exists, on the built-in sample data. Results land in demo-output/.
set -euo pipefail
OUT=${DEMO_OUT:-demo-output}
mkdir -p "$OUT"
export TF_CPP_MIN_LOG_LEVEL=2

echo "== 1. sample data"
edge-trash sample-data --out "$OUT/sample" --num-images 200

echo "== 2. TFRecords"
edge-trash build-tfrecords --annotations "$OUT/sample/annotations.json" --images "$OUT/sample/images" \
  --out "$OUT/tfrecords" --workers 2 --quiet

echo "== 3. dataset analysis"
edge-trash analyze --annotations "$OUT/sample/annotations.json" --images "$OUT/sample/images" \
  --tfrecords "$OUT/tfrecords" --out "$OUT/analysis"

echo
echo "demo results:"
echo "  sample dataset   $OUT/sample/annotations.json"
echo "  TFRecords        $OUT/tfrecords (report.json)"
echo "  analysis         $OUT/analysis/report.md"
