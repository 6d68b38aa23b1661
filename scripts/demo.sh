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

echo "== 4. training (SSDLite MobileNetV2 0.35, 224 px, from scratch: about 8 minutes on 2 cores)"
rm -rf "$OUT/run"
edge-trash train --data "$OUT/tfrecords" --out "$OUT/run" --config demo

echo "== 5. evaluation on the held-out val split"
edge-trash evaluate --model "$OUT/run" --data "$OUT/tfrecords" --split val --out "$OUT/eval/metrics.json" --render 4

echo "== 6. int8 export for the Edge TPU"
# The demo model trains for minutes on synthetic data and its int8 AP50 drop exceeds the default 2-point
# gate; the demo widens the gate explicitly so every stage runs, and prints the drop from parity.json.
rc=0
edge-trash export --model "$OUT/run" --data "$OUT/tfrecords" --out "$OUT/bundle" --edgetpu --max-ap-drop 10 || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 3 ]; then
  echo "export failed with exit code $rc" >&2
  exit "$rc"
fi
[ "$rc" -eq 3 ] && echo "(exit 3: no edgetpu_compiler on this machine; everything else is in $OUT/bundle)"
edge-trash inspect "$OUT/bundle/model_int8.tflite" | tail -n 3
python - "$OUT/bundle/parity.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1]))
print("parity (val): float AP50 %.1f, int8 AP50 %.1f, drop %.1f points (default gate 2, demo gate %g); int8 "
      "reproduces %.0f%% of float detections; int8 CPU latency %.1f ms (median of %d)"
      % (p["float"]["AP50"], p["int8"]["AP50"], p["drop_points"]["AP50"], p["max_ap50_drop"],
         100 * p["reproduced"]["fraction"], p["int8_cpu_latency_ms"]["median_ms"], p["int8_cpu_latency_ms"]["runs"]))
PY
echo "== 7. the sort service on held-out conveyor frames (simulated actuator)"
python scripts/demo_device.py "$OUT/bundle" "$OUT/device"

echo
echo "demo results:"
echo "  sample dataset   $OUT/sample/annotations.json"
echo "  TFRecords        $OUT/tfrecords (report.json)"
echo "  analysis         $OUT/analysis/report.md"
echo "  trained run      $OUT/run (metrics.json, saved_model/)"
echo "  evaluation       $OUT/eval/metrics.json and renders"
echo "  device bundle    $OUT/bundle (model_int8.tflite, compat.json, parity.json, manifest.json)"
echo "  device replay    $OUT/device (events.sqlite, replay_score.json)"
