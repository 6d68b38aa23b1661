"""The runtime against a REAL int8 TFLite detector (built once per session with TensorFlow).

The fixture model detects pure red/green/blue 8x8-pixel cells of its 64x64 input (see
runtime_fixtures.build_color_detector), so exact expected detections are known. The service
itself must never import TensorFlow: checked in a subprocess after a full run.
"""

import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from edge_trash.edge_runtime.decode import OutputReader
from edge_trash.edge_runtime.interpreter import describe_input, load_interpreter
from edge_trash.edge_runtime.manifest import verify_bundle
from edge_trash.edge_runtime.service import Detector
from runtime_fixtures import LABELS, color_image, make_bundle  # color_model: conftest.py

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
pytestmark = pytest.mark.slow


def test_real_model_outputs_are_read_by_signature_and_decoded_in_frame_pixels(color_model):
    loaded = load_interpreter(color_model, None)
    assert loaded.accelerator == "cpu" and loaded.package in ("tflite_runtime", "ai_edge_litert")
    assert describe_input(loaded.interpreter)["shape"] == [1, 64, 64, 3]
    assert describe_input(loaded.interpreter)["dtype"] == "uint8"
    detector = Detector(loaded.interpreter, LABELS, score_threshold=0.5)
    assert detector.reader.source == "signature"
    # a 128x256 frame: stretch 2x vertically, 4x horizontally. A red square over model cell
    # (row 1, col 2) and a blue one over cell (5, 6).
    frame = np.zeros((128, 256, 3), np.uint8)
    frame[16:32, 64:96] = [255, 0, 0]
    frame[80:96, 192:224] = [0, 0, 255]
    dets = sorted(detector.detect(frame), key=lambda d: d.class_id)
    assert [(d.class_id, d.label) for d in dets] == [(0, "bottle"), (2, "carton")]
    assert all(d.score > 0.9 for d in dets)
    np.testing.assert_allclose(list(dets[0].bbox), [64, 16, 96, 32], atol=0.5)
    np.testing.assert_allclose(list(dets[1].bbox), [192, 80, 224, 96], atol=0.5)
    assert detector.detect(np.full((128, 256, 3), 255, np.uint8)) == []  # white: nothing


def test_real_model_count_and_classes_match_the_contract(color_model):
    loaded = load_interpreter(color_model, None)
    interp = loaded.interpreter
    image = color_image(64, [(1, 0, 0, 8, 8), (1, 56, 56, 64, 64), (0, 24, 24, 32, 32)])
    interp.set_tensor(describe_input(interp)["index"], image[None])
    interp.invoke()
    count, scores, classes, boxes = OutputReader(interp).read()
    assert count == 3
    assert sorted(int(c) for c in classes[:3]) == [0, 1, 1]
    assert (scores[:3] > 0.9).all()  # entries past count are undefined (not zeros): never read them


def test_bundle_with_real_model_verifies_against_its_input_tensor(color_model, tmp_path):
    bundle = make_bundle(str(tmp_path / "bundle"), model_path=color_model)
    loaded = load_interpreter(os.path.join(bundle, "model_int8.tflite"), None)
    assert verify_bundle(bundle, describe_input(loaded.interpreter))["labels"] == LABELS


NO_TF_RUN = """
import json, sys
from edge_trash.edge_runtime.__main__ import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("tensorflow", "tf_keras", "keras", "click") if m in sys.modules)
print("HEAVY=" + json.dumps(heavy))
sys.exit(code)
"""


def test_full_service_run_with_real_model_never_imports_tensorflow(color_model, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(12):  # a red square moving right across a 64x128 frame one model cell (16 px) per frame
        frame = np.zeros((64, 128, 3), np.uint8)
        x = 16 * t - 16
        frame[16:24, max(x, 0):max(x + 16, 0)] = [255, 0, 0]  # exactly one model cell (8x8 of 64x64)
        np.save(str(frames / ("%04d.npy" % t)), frame)
    db = str(tmp_path / "events.sqlite")
    bundle = make_bundle(str(tmp_path / "bundle"), model_path=color_model, sort_overrides={
        "travel_delay_s": 0.0, "health": {"enabled": False}, "log": {"path": db},
        "classes": {"bottle": "plastic", "can": "metal", "carton": "paper"}, "bins": ["plastic", "metal", "paper",
                                                                                      "reject"],
        "tracker": {"max_distance": 1.5}})
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", NO_TF_RUN, "run", "--bundle", bundle, "--source",
                           "dir:%s" % frames], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY=[]" in proc.stdout, proc.stdout
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert summary["accelerator"] == "cpu" and summary["counters"]["processed"] == 12
    con = sqlite3.connect(db)
    rows = con.execute("SELECT label, bin, status FROM decisions").fetchall()
    con.close()
    assert rows == [("bottle", "plastic", "actuated")]
