"""Annotation reading benchmark: our COCO reader against Model Garden's on a COCO-size file.

Writes one COCO JSON shaped like COCO's and TACO's (polygon masks of 75 points beside each box,
1% crowd regions with uncompressed RLE, a long-tailed class list), then reads it, each reader in
a fresh subprocess, alternating, ``--repeat`` times:

- Model Garden's ``create_coco_tf_record._load_object_annotations`` (``json.load`` of the whole
  tree, then its boxes grouped per image): what its converter holds while it converts;
- our ``edge_trash.tfrecords.coco.load_coco`` (every check of ``build-tfrecords`` and ``analyze``;
  a polygon a usable box makes unneeded is dropped as the parser builds each annotation).

Each child reports the wall time of the read and its peak memory above what it held before
the read (its high-water resident size, ``VmHWM``, against its resident size after its imports).
Ratios are against Model Garden's reader in the same run: memory and time, best of the repeats.

    python benchmarks/bench_annotations.py [--out bench-output/annotations.json] [--annotations 100000]
                                           [--repeat 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

from _common import print_table, write_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# What each child runs: import its reader, note the resident size, read, print time and peak.
_CHILD = r"""
import json, sys, time
def status(field):  # this process's own figures (ru_maxrss would count the parent's size at fork)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
which, path = sys.argv[1], sys.argv[2]
if which == "model_garden":
    from official.vision.data import create_coco_tf_record as mg
    read = mg._load_object_annotations
else:
    from edge_trash.tfrecords.coco import load_coco as read
before = status("VmRSS")
start = time.perf_counter()
result = read(path)
seconds = time.perf_counter() - start
peak = status("VmHWM")
boxes = len(result.boxes) if which == "ours" else sum(len(v) for v in result[0].values())
print(json.dumps({"seconds": seconds, "peak_above_start_bytes": max(0, peak - before), "boxes": boxes}))
"""


def write_annotations(path: Path, num_annotations: int, seed: int = 0) -> int:
    """Write a COCO detection file of ``num_annotations`` boxes with polygon masks (and 1% crowd
    regions as uncompressed RLE) on ``num_annotations // 10`` images; returns its size in bytes."""
    rng = random.Random(seed)
    num_images = max(1, num_annotations // 10)
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480, "license": 1}
              for i in range(1, num_images + 1)]
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "litter"} for c in range(1, 61)]
    weights = [1.0 / c for c in range(1, 61)]  # long-tailed
    annotations: List[Dict[str, Any]] = []
    for a in range(1, num_annotations + 1):
        x, y, w, h = rng.uniform(0, 500), rng.uniform(0, 380), rng.uniform(4, 140), rng.uniform(4, 100)
        crowd = rng.random() < 0.01
        if crowd:
            segmentation: Any = {"counts": [rng.randint(0, 400) for _ in range(60)], "size": [480, 640]}
        else:
            segmentation = [[round(v, 2) for _ in range(75)
                             for v in (x + rng.uniform(0, w), y + rng.uniform(0, h))]]
        annotations.append({"id": a, "image_id": rng.randint(1, num_images),
                            "category_id": rng.choices(range(1, 61), weights)[0], "segmentation": segmentation,
                            "area": round(w * h, 2), "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                            "iscrowd": int(crowd)})
    text = json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations,
                       "categories": categories})
    path.write_text(text, encoding="utf-8")
    return len(text)


def read_once(which: str, path: Path) -> Dict[str, Any]:
    """Run one reader in a fresh Python; its time, peak memory above its start and boxes read."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _CHILD, which, str(path)], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode:
        raise SystemExit(f"{which} reader failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: "Sequence[str] | None" = None) -> int:
    """Run the benchmark; prints the table and writes the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="bench-output/annotations.json", help="JSON result file")
    parser.add_argument("--annotations", type=int, default=100_000, help="boxes in the generated file")
    parser.add_argument("--repeat", type=int, default=3, help="reads per reader (best kept)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 boxes, one read each")
    args = parser.parse_args(argv)
    if args.quick:
        args.annotations, args.repeat = 2_000, 1
    with tempfile.TemporaryDirectory(prefix="bench_annotations_") as tmp:
        path = Path(tmp) / "instances.json"
        size = write_annotations(path, args.annotations)
        print(f"annotation file: {args.annotations:,} boxes, {size / 1e6:.0f} MB")
        runs: Dict[str, List[Dict[str, Any]]] = {"model_garden": [], "ours": []}
        for _ in range(args.repeat):
            for which in runs:  # alternating, so a slow spell of the machine hits both
                runs[which].append(read_once(which, path))
    best = {w: {"seconds": min(r["seconds"] for r in rs),
                "peak_above_start_mb": min(r["peak_above_start_bytes"] for r in rs) / 1e6,
                "boxes": rs[0]["boxes"]} for w, rs in runs.items()}
    mg, ours = best["model_garden"], best["ours"]
    result = {
        "annotation_file_mb": size / 1e6, "annotations": args.annotations, "repeat": args.repeat,
        "model_garden": mg, "ours": ours, "runs": runs,
        "memory_ratio_model_garden_over_ours": mg["peak_above_start_mb"] / max(ours["peak_above_start_mb"], 1e-9),
        "time_ratio_model_garden_over_ours": mg["seconds"] / max(ours["seconds"], 1e-9),
        "peak_over_file_size": {w: b["peak_above_start_mb"] / (size / 1e6) for w, b in best.items()},
    }
    print_table(f"Reading {size / 1e6:.0f} MB of COCO annotations (best of {args.repeat})",
                ["reader", "seconds", "peak MB above start", "x file size", "boxes"],
                [[w, b["seconds"], b["peak_above_start_mb"], result["peak_over_file_size"][w], b["boxes"]]
                 for w, b in best.items()])
    print(f"\nModel Garden / ours: memory {result['memory_ratio_model_garden_over_ours']:.2f}x, "
          f"time {result['time_ratio_model_garden_over_ours']:.2f}x")
    print(f"wrote {write_json(args.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
