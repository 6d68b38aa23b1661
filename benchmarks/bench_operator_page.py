"""Benchmark: does serving the operator's page slow the sort loop?

Same model and frames as ``bench_runtime.py`` (320x320 SSD-like int8, 640x480 frames). Runs of the
whole loop alternate WITHOUT and WITH a client that polls like the page does (the live overlay and
the frame JPEG 4x a second, status, counts and decisions every second, the queue every 5 s, plus a
thumbnail per new decision), and the median frame rates are compared.

Target: the loop's frame rate with a client attached stays within 5% of the rate without.
Usage: python benchmarks/bench_operator_page.py [--frames 300] [--repeats 3] [--out bench-output/operator_page.json]
"""

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_runtime as br  # noqa: E402  (puts the repo and tests/ on sys.path)
from _common import print_table, write_json  # noqa: E402
from edge_trash.edge_runtime.interpreter import load_interpreter  # noqa: E402
from edge_trash.edge_runtime.service import build_service  # noqa: E402

PAGE_SCHEDULE = [("/api/live", 0.25), ("/api/frame.jpg", 0.25), ("/api/status", 1.0), ("/api/counts", 1.0),
                 ("/api/decisions?limit=12", 1.0), ("/api/queue", 5.0)]


def poll_like_the_page(base, stop, results):
    """Request the page's endpoints on its schedule until ``stop`` is set (in its own process, like a
    browser on another machine: the device process only pays for serving)."""
    counts = {"requests": 0, "bytes": 0, "errors": 0, "not_yet": 0}
    due = {path: 0.0 for path, _ in PAGE_SCHEDULE}
    seen_thumbs = set()
    while not stop.is_set():
        now = time.monotonic()
        for path, period in PAGE_SCHEDULE:
            if now >= due[path]:
                due[path] = now + period
                try:
                    with urllib.request.urlopen(base + path, timeout=5) as r:
                        body = r.read()
                    counts["requests"] += 1
                    counts["bytes"] += len(body)
                    if path.startswith("/api/decisions"):
                        for d in json.loads(body)["decisions"]:
                            if d["id"] not in seen_thumbs:
                                seen_thumbs.add(d["id"])
                                try:
                                    with urllib.request.urlopen(base + d["thumb"], timeout=5) as t:
                                        counts["bytes"] += len(t.read())
                                    counts["requests"] += 1
                                except urllib.error.HTTPError as exc:
                                    counts["not_yet" if exc.code == 404 else "errors"] += 1
                                except OSError:
                                    counts["errors"] += 1
                except urllib.error.HTTPError as exc:
                    # 404 before the first frame is processed is what the page sees too
                    counts["not_yet" if exc.code == 404 else "errors"] += 1
                except OSError:
                    counts["errors"] += 1
        stop.wait(0.02)
    results.put(counts)


def run_once(model, frames, count, with_client):
    """One loop run over ``count`` frames; returns fps and the client's request counts."""
    with tempfile.TemporaryDirectory() as workdir:
        import runtime_fixtures as rf
        bundle = rf.make_bundle(os.path.join(workdir, "bundle"), model_path=model, labels=br.LABELS,
                                input_size=320, sort_overrides={
                                    "travel_delay_s": 0.0, "health": {"port": 0},
                                    "log": {"path": os.path.join(workdir, "events.sqlite")},
                                    "hard_examples": {"dir": os.path.join(workdir, "hard")},
                                    "score_threshold": 0.5})
        loader = lambda cpu, tpu, dev: load_interpreter(cpu, None)  # noqa: E731
        loop, cleanup = build_service(bundle, None, "", interpreter_loader=loader,
                                      source=br.MemorySource(frames, count))
        counts = {"requests": 0, "bytes": 0, "errors": 0, "not_yet": 0}
        ctx = multiprocessing.get_context("spawn")
        stop, results = ctx.Event(), ctx.Queue()
        client = None
        try:
            if with_client:
                base = "http://%s:%d" % tuple(loop.health_address)
                client = ctx.Process(target=poll_like_the_page, args=(base, stop, results), daemon=True)
                client.start()
                time.sleep(1.0)  # let the client process start before timing
            start = time.perf_counter()
            summary = loop.run(threading.Event())
            wall = time.perf_counter() - start
        finally:
            stop.set()
            if client is not None:
                counts = results.get(timeout=30)
                client.join(timeout=10)
            cleanup()
        return {"fps": summary["counters"]["processed"] / wall, "frames": summary["counters"]["processed"],
                "client": counts}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join("bench-output", "operator_page.json"))
    parser.add_argument("--model", help="a detection .tflite instead of the built 320x320 SSD")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    model = args.model or br.ensure_model(os.path.join(out_dir, "ssd320_int8.tflite"), 320)
    frames = br.synthetic_frames()
    without, with_client = [], []
    for _ in range(args.repeats):  # alternate so both see the same drift in machine load
        without.append(run_once(model, frames, args.frames, False))
        with_client.append(run_once(model, frames, args.frames, True))
    base = float(np.median([r["fps"] for r in without]))
    served = float(np.median([r["fps"] for r in with_client]))
    ratio = served / base
    requests = sum(r["client"]["requests"] for r in with_client)
    errors = sum(r["client"]["errors"] for r in with_client)
    not_yet = sum(r["client"]["not_yet"] for r in with_client)
    result = {"model": model, "frames_per_run": args.frames, "repeats": args.repeats,
              "fps_without_client": base, "fps_with_client": served, "ratio": ratio,
              "runs_without": [r["fps"] for r in without], "runs_with": [r["fps"] for r in with_client],
              "client_requests": requests, "client_errors": errors, "client_404_before_first_frame": not_yet,
              "client_mb": sum(r["client"]["bytes"] for r in with_client) / 1e6,
              "target": {"ratio_at_least": 0.95}, "meets": ratio >= 0.95 and errors == 0}
    rows = [("loop rate without a client (median)", "%.1f fps (runs: %s)" % (
                base, ", ".join("%.1f" % r["fps"] for r in without)), ""),
            ("loop rate with the page polling (median)", "%.1f fps (runs: %s)" % (
                served, ", ".join("%.1f" % r["fps"] for r in with_client)), ""),
            ("with / without", "%.1f%%" % (100 * ratio), ">= 95%"),
            ("page requests served (errors)", "%d (%d)" % (requests, errors), "0 errors")]
    print_table("operator page: the sort loop with and without a client", ("measure", "value", "target"), rows)
    write_json(args.out, result)
    print("bench_operator_page: wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
