"""Data stage benchmark: our ``build-tfrecords`` against Model Garden's ``create_coco_tf_record``.

Both converters run as subprocesses on the same phone-size JPEGs (mostly 4032x3024,
plus TACO's other common sizes), so both pay their own start-up (Python plus whatever each
imports: TensorFlow for Model Garden's, not for ours), reported as ``startup_s``.
Measured in one run: conversion wall time, bytes written, the time tf.data takes to
decode and resize every record to 320x320 (what training pays every epoch), the
boxes each output keeps per image id, and how our conversion scales from 1 to
``--workers`` processes. Ratios are against the baseline measured in the same run.

    python benchmarks/bench_tfrecords.py [--out bench-output/tfrecords.json] [--num-images 200] [--quick]
    python benchmarks/bench_tfrecords.py --scaling 1,2,4,8,16 [--out bench-output/tfrecords_scaling.json]

``--scaling`` runs our converter alone (no TensorFlow needed) with each number of
workers and compares each against one worker in the same run: how far a bigger machine
takes it. Every run's output must be byte-identical to the one-worker run.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from _common import print_table, write_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import

# (width, height, share): phone photos as TACO has them; 6000x4000 is the rare big one.
PHONE_SIZES: Tuple[Tuple[int, int, float], ...] = (
    (4032, 3024, 0.45), (3024, 4032, 0.15), (4000, 3000, 0.12), (3000, 4000, 0.10),
    (2448, 3264, 0.12), (6000, 4000, 0.06),
)
JPEG_QUALITY = 95
NOISE_SIGMA = 4.0  # sensor-like grain; about 3.4 MB per 12 MP frame at quality 95, like real phone JPEGs
DECODE_SIZE = (320, 320)
TARGETS = {"convert_plus_decode_speedup": 5.0, "size_reduction": 10.0}
MB = 1e6


# ----------------------------------------------------------------------------- dataset


def _sizes(num_images: int) -> List[Tuple[int, int]]:
    """Exactly ``num_images`` sizes with the PHONE_SIZES shares (largest remainders), shuffled."""
    raw = [share * num_images for _, _, share in PHONE_SIZES]
    counts = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: num_images - sum(counts)]:
        counts[i] += 1
    if num_images >= len(PHONE_SIZES):  # every size at least once
        for i, n in enumerate(counts):
            if n == 0:
                counts[i] = 1
                counts[counts.index(max(counts))] -= 1
    pool = [(w, h) for (w, h, _), n in zip(PHONE_SIZES, counts) for _ in range(n)]
    random.Random(0).shuffle(pool)  # mixed order, the same in every run
    return pool


def _make_photo(job: Tuple[int, int, int, str]) -> Tuple[int, List[Tuple[str, List[float]]], int]:
    """Draw a sample scene at 1/4 size, upscale to phone size, add grain, save as a quality-95 JPEG."""
    import numpy as np
    from PIL import Image

    from edge_trash.tfrecords.sample_data import render_scene

    index, width, height, path = job
    rng = np.random.default_rng([7, index])
    small, items = render_scene(rng, width // 4, height // 4, int(rng.integers(1, 7)))
    big = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR), dtype=np.int16)
    tile = np.random.default_rng(1).normal(0.0, NOISE_SIGMA, (509, 511, 3)).astype(np.int16)
    oy, ox = int(rng.integers(509)), int(rng.integers(511))
    noise = np.tile(tile, (height // 509 + 2, width // 511 + 2, 1))[oy:oy + height, ox:ox + width]
    photo = Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=JPEG_QUALITY)
    Path(path).write_bytes(buf.getvalue())
    sx, sy = width / (width // 4), height / (height // 4)
    boxes = [(name, [round(x0 * sx, 2), round(y0 * sy, 2), round((x1 - x0) * sx, 2), round((y1 - y0) * sy, 2)])
             for name, (x0, y0, x1, y1) in items]
    return index, boxes, len(buf.getvalue())


def make_dataset(root: Path, num_images: int, workers: int) -> Dict[str, Any]:
    """Write ``root/images/*.jpg`` and ``root/annotations.json``; returns what was made."""
    from edge_trash.tfrecords.sample_data import CLASSES

    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    sizes = _sizes(num_images)
    jobs = [(i, w, h, str(images_dir / f"{i + 1:06d}.jpg")) for i, (w, h) in enumerate(sizes)]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = sorted(pool.imap_unordered(_make_photo, jobs))
    cat_id = {name: i + 1 for i, (name, _, _) in enumerate(CLASSES)}
    images, annotations = [], []
    for (index, boxes, _), (w, h) in zip(results, sizes):
        images.append({"id": index + 1, "file_name": f"{index + 1:06d}.jpg", "width": w, "height": h})
        for name, bbox in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1, "category_id": cat_id[name],
                                "bbox": bbox, "area": round(bbox[2] * bbox[3], 2), "iscrowd": 0})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": i + 1, "name": n, "supercategory": s} for i, (n, s, _) in enumerate(CLASSES)]}
    (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return {"images": len(images), "boxes": len(annotations), "bytes": sum(r[2] for r in results),
            "sizes": {f"{w}x{h}": n for (w, h), n in Counter(sizes).most_common()},
            "jpeg_quality": JPEG_QUALITY, "generate_s": round(time.perf_counter() - start, 2)}


# ----------------------------------------------------------------------------- measuring


def _run(cmd: Sequence[str], what: str) -> float:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    start = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{what} failed with exit code {proc.returncode}: {' '.join(cmd)}")
    return seconds


def _tfrecord_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".tfrecord"))


def decode_pass(files: List[Path]) -> float:
    """Seconds for tf.data to read, decode and resize every record to DECODE_SIZE (one epoch, no training)."""
    import tensorflow as tf

    def load(raw: Any) -> Any:
        parsed = tf.io.parse_single_example(raw, {"image/encoded": tf.io.FixedLenFeature([], tf.string)})
        image = tf.io.decode_image(parsed["image/encoded"], channels=3, expand_animations=False)
        return tf.image.resize(image, DECODE_SIZE)

    ds = tf.data.TFRecordDataset([str(f) for f in files]).map(load, num_parallel_calls=tf.data.AUTOTUNE).prefetch(4)
    start = time.perf_counter()
    for _ in ds:
        pass
    return time.perf_counter() - start


def boxes_per_image(files: List[Path]) -> Dict[str, int]:
    """``image/source_id`` -> number of boxes in the records."""
    import tensorflow as tf

    out: Dict[str, int] = {}
    for raw in tf.data.TFRecordDataset([str(f) for f in files]):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        source_id = feature["image/source_id"].bytes_list.value[0].decode()
        xmin = feature["image/object/bbox/xmin"].float_list.value if "image/object/bbox/xmin" in feature else []
        out[source_id] = len(xmin)
    return out


def _net(seconds: float, startup_s: float) -> "float | None":
    """``seconds`` less the start-up, or None when a busy machine made start-up look as long as the run."""
    return seconds - startup_s if seconds - startup_s > 0.1 * seconds else None


def _rate(count: float, seconds: "float | None") -> "float | None":
    return None if seconds is None else round(count / seconds, 2)


def _bytes(files: List[Path]) -> int:
    return sum(f.stat().st_size for f in files)


def run(num_images: int, workers: int, work: Path) -> Dict[str, Any]:
    """Make the photos, run both converters and both decode passes; returns the result dict."""
    print(f"making {num_images} phone-size JPEGs in {work} ...", flush=True)
    data = work / "data"
    dataset = make_dataset(data, num_images, workers)
    ann, images = data / "annotations.json", data / "images"
    print(f"  {dataset['images']} images, {dataset['boxes']} boxes, {dataset['bytes'] / MB:.0f} MB "
          f"in {dataset['generate_s']:.0f}s", flush=True)

    # Each converter's fixed cost: importing what its command imports (the fastest of three tries).
    startup = {name: min(_run([sys.executable, "-c", f"import {modules}"], f"importing {modules}") for _ in range(3))
               for name, modules in (("model_garden", "official.vision.data.create_coco_tf_record"),
                                     ("ours", "edge_trash.cli, edge_trash.tfrecords.build"))}

    mg_dir = work / "model_garden"
    mg_dir.mkdir()
    shards = max(1, math.ceil(dataset["bytes"] / (200 * MB)))
    print(f"Model Garden create_coco_tf_record ({workers} processes) ...", flush=True)
    mg_convert = _run([sys.executable, "-m", "official.vision.data.create_coco_tf_record", "--logtostderr",
                       f"--image_dir={images}", f"--object_annotations_file={ann}",
                       f"--output_file_prefix={mg_dir / 'coco'}", f"--num_shards={shards}",
                       f"--num_processes={workers}"], "Model Garden's converter")
    mg_files = _tfrecord_files(mg_dir)

    ours: Dict[int, Dict[str, Any]] = {}
    for w in sorted({1, workers}):
        out = work / f"ours_{w}"
        print(f"edge-trash build-tfrecords --workers {w} ...", flush=True)
        seconds = _run([sys.executable, "-m", "edge_trash", "build-tfrecords", "--annotations", str(ann),
                        "--images", str(images), "--out", str(out), "--workers", str(w), "--quiet"],
                       "edge-trash build-tfrecords")
        ours[w] = {"convert_s": seconds, "dir": out}
    our_files = _tfrecord_files(ours[workers]["dir"])
    our_report = json.loads((ours[workers]["dir"] / "report.json").read_text())

    print("decode passes (tf.data, decode + resize to 320x320) ...", flush=True)
    mg_decode = decode_pass(mg_files)
    our_decode = decode_pass(our_files)

    mg_boxes, our_boxes = boxes_per_image(mg_files), boxes_per_image(our_files)
    lost = sorted((sid for sid, n in mg_boxes.items() if our_boxes.get(sid, 0) < n), key=int)
    mg_total = mg_convert + mg_decode
    our_total = ours[workers]["convert_s"] + our_decode
    result = {
        "benchmark": "tfrecords",
        "config": {"num_images": num_images, "workers": workers, "decode_size": list(DECODE_SIZE),
                   "our_max_size": our_report["options"]["max_size"], "our_quality": our_report["options"]["quality"],
                   "model_garden_shards": shards, "model_garden_processes": workers},
        "dataset": dataset,
        "startup_s": {name: round(v, 2) for name, v in startup.items()},
        "model_garden": {"convert_s": round(mg_convert, 2), "bytes": _bytes(mg_files), "records": len(mg_boxes),
                         "boxes": sum(mg_boxes.values()), "decode_pass_s": round(mg_decode, 2),
                         "convert_plus_decode_s": round(mg_total, 2)},
        "ours": {"convert_s": round(ours[workers]["convert_s"], 2), "bytes": _bytes(our_files),
                 "records": len(our_boxes), "boxes": sum(our_boxes.values()), "decode_pass_s": round(our_decode, 2),
                 "convert_plus_decode_s": round(our_total, 2)},
        "scaling": [{"workers": w, "convert_s": round(r["convert_s"], 2),
                     "images_per_s": round(num_images / r["convert_s"], 2),
                     "images_per_s_without_startup": _rate(num_images, _net(r["convert_s"], startup["ours"]))}
                    for w, r in sorted(ours.items())],
        "boxes_lost_vs_model_garden": lost,
    }
    net_mg, net_ours = _net(mg_total, startup["model_garden"]), _net(our_total, startup["ours"])
    mg_bytes, our_bytes = result["model_garden"]["bytes"], result["ours"]["bytes"]
    epochs_to_pay_back = None
    if our_decode < mg_decode:
        epochs_to_pay_back = max(0.0, (ours[workers]["convert_s"] - mg_convert) / (mg_decode - our_decode))
    result["ratios"] = {
        "convert_plus_decode_speedup": round(mg_total / our_total, 2),
        "convert_plus_decode_speedup_without_startup": None if net_ours is None or net_mg is None
        else round(net_mg / net_ours, 2),
        "convert_plus_10_decode_passes_speedup": round(
            (mg_convert + 10 * mg_decode) / (ours[workers]["convert_s"] + 10 * our_decode), 2),
        "convert_speedup": round(mg_convert / ours[workers]["convert_s"], 2),
        "decode_pass_speedup": round(mg_decode / our_decode, 2),
        "size_reduction": round(mg_bytes / our_bytes, 2),
        "epochs_until_conversion_pays_back": None if epochs_to_pay_back is None else round(epochs_to_pay_back, 2),
        "worker_scaling": round(ours[1]["convert_s"] / ours[workers]["convert_s"], 2) if workers > 1 else 1.0,
    }
    result["targets"] = {
        "convert_plus_decode_speedup>=5": result["ratios"]["convert_plus_decode_speedup"]
        >= TARGETS["convert_plus_decode_speedup"],
        "size_reduction>=10": result["ratios"]["size_reduction"] >= TARGETS["size_reduction"],
        "no_box_lost": not lost,
    }
    return result


def run_scaling(num_images: int, worker_counts: Sequence[int], work: Path) -> Dict[str, Any]:
    """Our converter alone at each worker count, against 1 worker in the same run; outputs compared."""
    import hashlib

    print(f"making {num_images} phone-size JPEGs in {work} ...", flush=True)
    data = work / "data"
    dataset = make_dataset(data, num_images, max(worker_counts))
    ann, images = data / "annotations.json", data / "images"
    startup = min(_run([sys.executable, "-c", "import edge_trash.cli, edge_trash.tfrecords.build"], "import")
                  for _ in range(3))
    rows: List[Dict[str, Any]] = []
    digests = set()
    for w in sorted(set(worker_counts) | {1}):
        out = work / f"ours_{w}"
        print(f"edge-trash build-tfrecords --workers {w} ...", flush=True)
        seconds = _run([sys.executable, "-m", "edge_trash", "build-tfrecords", "--annotations", str(ann),
                        "--images", str(images), "--out", str(out), "--workers", str(w), "--quiet"],
                       "edge-trash build-tfrecords")
        digests.add(hashlib.sha256(b"".join(f.read_bytes() for f in _tfrecord_files(out))).hexdigest())
        rows.append({"workers": w, "convert_s": round(seconds, 2), "images_per_s": round(num_images / seconds, 2),
                     "images_per_s_without_startup": _rate(num_images, _net(seconds, startup))})
    base = rows[0]["convert_s"]
    for row in rows:
        row["speedup_vs_1_worker"] = round(base / row["convert_s"], 2)
        row["efficiency"] = round(row["speedup_vs_1_worker"] / row["workers"], 2)
    return {"benchmark": "tfrecords_scaling", "config": {"num_images": num_images, "workers": list(worker_counts)},
            "dataset": dataset, "startup_s": round(startup, 2), "scaling": rows,
            "outputs_identical": len(digests) == 1, "targets": {"outputs_identical": len(digests) == 1}}


def report_scaling(result: Dict[str, Any]) -> None:
    """Print the scaling table."""
    print_table(f"edge-trash build-tfrecords scaling, {result['dataset']['images']} phone JPEGs "
                f"({result['dataset']['bytes'] / MB:.0f} MB), {os.cpu_count()} CPUs; start-up "
                f"{result['startup_s']:.2f}s; outputs identical: {result['outputs_identical']}",
                ["workers", "convert s", "images/s", "images/s w/o start-up", "speedup vs 1", "efficiency"],
                [[r["workers"], r["convert_s"], r["images_per_s"], r["images_per_s_without_startup"],
                  r["speedup_vs_1_worker"], r["efficiency"]] for r in result["scaling"]])


def report(result: Dict[str, Any]) -> None:
    """Print the tables."""
    mg, ours, r = result["model_garden"], result["ours"], result["ratios"]
    print_table(f"TFRecord conversion, {result['dataset']['images']} phone JPEGs "
                f"({result['dataset']['bytes'] / MB:.0f} MB), {result['config']['workers']} processes each; "
                f"convert includes start-up ({result['startup_s']['model_garden']:.1f}s Model Garden, "
                f"{result['startup_s']['ours']:.1f}s ours)",
                ["converter", "convert s", "decode pass s", "convert+decode s", "MB written", "records", "boxes"],
                [["model garden", mg["convert_s"], mg["decode_pass_s"], mg["convert_plus_decode_s"],
                  round(mg["bytes"] / MB, 1), mg["records"], mg["boxes"]],
                 ["edge-trash", ours["convert_s"], ours["decode_pass_s"], ours["convert_plus_decode_s"],
                  round(ours["bytes"] / MB, 1), ours["records"], ours["boxes"]]])
    print_table("edge-trash scaling", ["workers", "convert s", "images/s", "images/s w/o start-up"],
                [[s["workers"], s["convert_s"], s["images_per_s"], s["images_per_s_without_startup"]]
                 for s in result["scaling"]])
    t = result["targets"]
    print_table("ratios (Model Garden / edge-trash, same run)", ["ratio", "value", "target"],
                [["convert + one decode pass", r["convert_plus_decode_speedup"],
                  f">= 5x {'ok' if t['convert_plus_decode_speedup>=5'] else 'MISSED'}"],
                 ["  same, without start-up", r["convert_plus_decode_speedup_without_startup"], ""],
                 ["convert + 10 decode passes (epochs)", r["convert_plus_10_decode_passes_speedup"], ""],
                 ["convert only", r["convert_speedup"], ""],
                 ["decode pass (every epoch)", r["decode_pass_speedup"], ""],
                 ["bytes written", r["size_reduction"], f">= 10x {'ok' if t['size_reduction>=10'] else 'MISSED'}"],
                 ["epochs until conversion pays back", r["epochs_until_conversion_pays_back"], ""],
                 ["worker scaling 1 -> max", r["worker_scaling"], ""],
                 ["boxes lost vs Model Garden", len(result["boxes_lost_vs_model_garden"]),
                  f"0 {'ok' if t['no_box_lost'] else 'MISSED'}"]])


def main(argv: "Sequence[str] | None" = None) -> int:
    """Entry point; the exit code is 1 only with --check when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None,
                        help="JSON result file [default: bench-output/tfrecords.json, with --scaling "
                             "bench-output/tfrecords_scaling.json]")
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="smoke run: 12 images")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="processes for both converters; ours also runs with 1 to show scaling")
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the photos and outputs")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--scaling", metavar="N,N,...",
                        help="only our converter, with each of these worker counts (no Model Garden, no TensorFlow)")
    args = parser.parse_args(argv)
    num_images = 12 if args.quick else args.num_images
    if num_images < 1 or args.workers < 1:
        parser.error("--num-images and --workers must be at least 1")
    counts: List[int] = []
    if args.scaling:
        try:
            counts = [int(v) for v in args.scaling.split(",") if v.strip()]
        except ValueError:
            parser.error(f"--scaling {args.scaling!r}: give worker counts like 1,2,4,8")
        if not counts or min(counts) < 1:
            parser.error("--scaling: every worker count must be at least 1")

    def measure(work: Path) -> Dict[str, Any]:
        return run_scaling(num_images, counts, work) if counts else run(num_images, args.workers, work)

    if args.keep:
        work = Path(args.keep)
        if work.exists() and any(work.iterdir()):
            parser.error(f"--keep {work}: not empty; give a new or empty folder")
        work.mkdir(parents=True, exist_ok=True)
        result = measure(work)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_tfrecords_") as tmp:
            result = measure(Path(tmp))
    result["quick"] = bool(args.quick)
    (report_scaling if counts else report)(result)
    path = write_json(args.out or f"bench-output/tfrecords{'_scaling' if counts else ''}.json", result)
    print(f"\nbench_tfrecords: wrote {path}")
    return 1 if args.check and not all(result["targets"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
