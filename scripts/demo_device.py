"""make demo, last stage: replay held-out conveyor frames through the sort service.

Writes a conveyor recording of sample-data items the model has never seen, a sort.yaml based on the
bundle's template (simulated actuator, log and hard-example queue under the demo folder), runs
``python -m edge_trash.edge_runtime run`` on it exactly as the Dev Board would (printing the operator
page's address while it runs), then prints the per-bin counts and the decision accuracy against the
recording's ground truth.

Usage: python scripts/demo_device.py BUNDLE OUT_DIR [--items 24] [--fps 12] [--port 8321]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from edge_trash.edge_runtime.replay_score import score_replay  # noqa: E402
from edge_trash.edge_runtime.sort_config import parse_config_text  # noqa: E402
from edge_trash.terminal import plural  # noqa: E402
from edge_trash.tfrecords.sample_data import write_conveyor_frames  # noqa: E402


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("out")
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--fps", type=float, default=12.0, help="replay pace (a camera's rate)")
    parser.add_argument("--port", type=int, default=8321)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rec = write_conveyor_frames(os.path.join(args.out, "conveyor"), num_items=args.items)
    with open(os.path.join(args.bundle, "sort.yaml")) as f:
        config = parse_config_text(f.read(), os.path.join(args.bundle, "sort.yaml"))
    log_path = os.path.join(args.out, "events.sqlite")
    for stale in (log_path, log_path + "-wal", log_path + "-shm"):
        if os.path.exists(stale):
            os.remove(stale)
    port = args.port if _port_free(args.port) else 0
    config.update({"travel_delay_s": 0.3, "log": {"path": log_path},
                   "hard_examples": dict(config.get("hard_examples") or {}, dir=os.path.join(args.out, "hard-examples")),
                   "health": {"host": "127.0.0.1", "port": port}})
    config_path = os.path.join(args.out, "sort.yaml")
    with open(config_path, "w") as f:
        json.dump(config, f, indent=1)
    cmd = [sys.executable, "-m", "edge_trash.edge_runtime", "run", "--bundle", args.bundle, "--config", config_path,
           "--source", "dir:%s?fps=%g" % (rec.frames_dir, args.fps)]
    print("replaying %d frames (%d items) through the sort service at %g fps:" % (rec.num_frames, args.items, args.fps))
    print("  " + " ".join(cmd))
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    summary = None
    for line in proc.stdout:
        if "operator page at" in line:
            print("  operator page: " + line.split("operator page at", 1)[1].split()[0] + "  (open it while the replay runs)")
        elif line.startswith("{"):
            summary = json.loads(line)
        elif "RUNNING ON THE CPU" in line:
            print("  note: no Edge TPU here, the service runs the int8 model on the CPU (it says so loudly)")
    rc = proc.wait()
    if rc != 0:
        print("the sort service failed (exit %d)" % rc, file=sys.stderr)
        return rc
    score = score_replay(log_path, str(rec.truth), class_bins=config["classes"])
    with open(os.path.join(args.out, "replay_score.json"), "w") as f:
        json.dump(score, f, indent=1)
    print("per-bin counts: " + ", ".join("%s %d" % kv for kv in sorted(score["per_bin"].items())))
    elsewhere = ", ".join(
        ("%d below min_confidence %g went to %s" % (n, config["min_confidence"], config["reject_bin"])
         if reason == "low_confidence" else "%d elsewhere (%s)" % (n, reason))
        for reason, n in sorted(score["right_class_other_bin"].items()))
    print("decision accuracy: %d of %d items classified right (%.0f%%), %d of them into their class's bin%s; "
          "%d missed, %s"
          % (score["correct"], score["items"], 100 * score["accuracy"], score["in_class_bin"],
             " (%s)" % elsewhere if elsewhere else "", len(score["missed"]),
             plural(score["extra_decisions"], "extra decision")))
    if summary:
        print("service: %d frames processed, %d dropped, %.1f fps, inference p50 %.1f ms, %s"
              % (summary["counters"].get("processed", 0), summary.get("dropped_frames", 0), summary.get("fps", 0.0),
                 (summary.get("inference_ms") or {}).get("p50") or 0.0, summary.get("accelerator")))
    print("device replay: wrote %s (event log), %s in %.0fs" % (log_path, os.path.join(args.out, "replay_score.json"),
                                                              time.monotonic() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
