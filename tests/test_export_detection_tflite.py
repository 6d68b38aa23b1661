"""The int8 detection model: Edge TPU op set and versions, pycoral's output contract, float parity."""

from __future__ import annotations

import numpy as np
import pytest

from export_helpers import TinyConfig, random_images, tiny_anchors, tiny_ssd

PLANTED = 2  # 1-based class id (labels.txt line 2) that wins every detection of the planted model
LOW, HIGH = 20, 235  # calibration and test pixel range: narrower than 0..255 on purpose


def pycoral_get_objects(interpreter, score_threshold: float = 0.0):
    """pycoral.adapters.detect.get_objects (2.0), re-implemented: read output_0..3 BY SIGNATURE NAME.

    pycoral only falls back to the outputs' positions when the model has no signature (as
    edgetpu_compiler leaves it); it raises when there is more than one. Returns (count, scores,
    class_ids, boxes) of the kept detections.
    """
    signatures = interpreter._get_full_signature_list()
    if len(signatures) > 1:
        raise ValueError("Only support model with one signature.")
    if signatures:
        outputs = signatures[next(iter(signatures))]["outputs"]
        count = int(interpreter.tensor(outputs["output_0"])()[0])
        scores = interpreter.tensor(outputs["output_1"])()[0]
        class_ids = interpreter.tensor(outputs["output_2"])()[0]
        boxes = interpreter.tensor(outputs["output_3"])()[0]
    else:
        out = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
        if out[3].size == 1:  # boxes, classes, scores, count
            boxes, class_ids, scores, count = out[0][0], out[1][0], out[2][0], int(out[3][0])
        else:  # scores, boxes, count, classes
            scores, boxes, count, class_ids = out[0][0], out[1][0], int(out[2][0]), out[3][0]
    keep = [i for i in range(count) if scores[i] >= score_threshold]
    return count, scores[keep].copy(), class_ids[keep].astype(int), boxes[keep].copy()


def _nms(boxes, scores, candidates, iou_threshold, limit):
    from edge_trash.export.parity import box_iou

    kept = []
    for i in sorted(candidates, key=lambda i: -scores[i]):
        if all(box_iou(boxes[i], boxes[j])[0, 0] <= iou_threshold for j in kept):
            kept.append(i)
        if len(kept) == limit:
            break
    return kept


def reference_postprocess(box_encodings, class_logits, anchors, config, regular_nms=True, scores=None):
    """Float numpy version of TFLite_Detection_PostProcess (from logits, or from ``scores``).

    ``regular_nms``: NMS per class, then the overall top max_detections (what the exporter uses,
    like the float decoder's combined NMS); otherwise fast NMS (class-agnostic, best class per box).
    """
    ty, tx, th, tw = (box_encodings[0] / np.asarray(config.box_coder_scales)).T
    ya, xa, ha, wa = anchors.T
    yc, xc = ty * ha + ya, tx * wa + xa
    h, w = np.exp(th) * ha, np.exp(tw) * wa
    boxes = np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
    if scores is None:
        scores = 1.0 / (1.0 + np.exp(-class_logits))
    probs = scores[0][:, 1:]
    rows = []  # (score, anchor, class)
    if regular_nms:
        for c in range(probs.shape[1]):
            candidates = np.flatnonzero(probs[:, c] >= config.score_threshold)
            kept = _nms(boxes, probs[:, c], candidates, config.iou_threshold, config.max_detections)
            rows += [(probs[i, c], i, c) for i in kept]
    else:
        best = probs.max(1)
        kept = _nms(boxes, best, np.flatnonzero(best >= config.score_threshold), config.iou_threshold,
                    config.max_detections)
        rows = [(best[i], i, probs[i].argmax()) for i in kept]
    rows = sorted(rows, key=lambda r: -r[0])[:config.max_detections]
    return (boxes[[r[1] for r in rows]].reshape(-1, 4), np.array([r[2] for r in rows], int),
            np.array([r[0] for r in rows], np.float32))


@pytest.fixture(scope="module")
def converted():
    """The planted tiny SSD, its int8 detection model (bytes) and its config."""
    from edge_trash.export.detection_tflite import convert_to_int8_detection_tflite, postprocess_params_from_config

    config = TinyConfig()
    model = tiny_ssd(config.num_classes, planted_class=PLANTED)
    params = postprocess_params_from_config(config)
    tflite_bytes = convert_to_int8_detection_tflite(model, tiny_anchors(), params, lambda: random_images(16, low=LOW, high=HIGH))
    return model, tflite_bytes, config


def _interpreter(tflite_bytes):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tflite_bytes)
    interpreter.allocate_tensors()
    return interpreter


@pytest.mark.slow
def test_graph_is_int8_edgetpu_ops_then_dequantize_and_postprocess(converted):
    from edge_trash.export.compat import inspect_tflite
    from edge_trash.export.edgetpu_gate import check
    from edge_trash.export.edgetpu_ops import MAX_PARSED_VERSION
    from edge_trash.export.tflite_model import read_tflite

    _, tflite_bytes, _ = converted
    report = inspect_tflite(tflite_bytes)
    assert report.compiler_can_parse and report.compiler_error is None
    assert report.cpu_op_names() == ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    # The CPU ops are the last three in execution order: one cut, like Coral's own SSD.
    assert [op.on_edgetpu for op in report.ops] == [True] * (len(report.ops) - 3) + [False] * 3
    for op in read_tflite(tflite_bytes).ops:
        if not op.is_custom:
            assert op.version <= MAX_PARSED_VERSION[op.name], (op.name, op.version)
    assert {op.name: op.version for op in report.ops}["QUANTIZE"] <= 2
    gate = check(tflite_bytes)
    assert gate.ok and gate.message == ""


@pytest.mark.slow
def test_pycoral_reads_outputs_by_signature_name(converted):
    from edge_trash.export.detection_tflite import summarize_io

    _, tflite_bytes, config = converted
    interpreter = _interpreter(tflite_bytes)
    signatures = interpreter.get_signature_list()
    # Exactly one signature with outputs output_0..3, so pycoral never falls back to shapes.
    assert list(signatures) == ["serving_default"]
    assert sorted(signatures["serving_default"]["outputs"]) == ["output_0", "output_1", "output_2", "output_3"]
    io = summarize_io(tflite_bytes)
    assert io["input_shape"] == [1, 32, 32, 3] and io["input_dtype"] == "uint8"
    # The uint8 input IS the pixel value although calibration never saw 0 or 255.
    assert io["input_quantization"] == {"scale": 1.0, "zero_point": 0}
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], random_images(1, seed=7, low=LOW, high=HIGH)[0][None])
    interpreter.invoke()
    count, scores, class_ids, boxes = pycoral_get_objects(interpreter)
    # The device runtime's reader finds the same tensors by signature name.
    from edge_trash.edge_runtime.decode import OutputReader
    reader = OutputReader(interpreter)
    assert reader.source == "signature"
    d_count, d_scores, d_classes, d_boxes = reader.read()
    assert d_count == count
    np.testing.assert_array_equal(d_scores[:count], scores)
    np.testing.assert_array_equal(d_boxes[:count], boxes)
    assert 1 <= count <= config.max_detections
    assert scores.dtype == np.float32 and boxes.dtype == np.float32  # outputs not quantized
    assert np.all(scores >= config.score_threshold - 1e-6) and np.all(scores <= 1.0)
    assert np.all(np.diff(scores) <= 1e-6)  # sorted by score
    # Background excluded, 0-based: the planted class id 2 (labels.txt line 2) comes out as 1.
    assert set(class_ids.tolist()) == {PLANTED - 1}
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])


def test_without_its_signature_as_the_compiler_leaves_it_every_reader_finds_the_same_outputs(converted):
    """edgetpu_compiler drops the signature: pycoral then reads the outputs by position, and Frigate always
    does, as boxes, classes, scores, count (Coral's SSD's order); the converter listed them scores, boxes,
    count, classes, which Frigate read as garbage."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edge_trash.edge_runtime.decode import OutputReader

    _, tflite_bytes, _ = converted
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
    model.signatureDefs = []
    bare = _interpreter(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    signed = _interpreter(tflite_bytes)
    image = random_images(1, seed=7, low=LOW, high=HIGH)[0][None]
    for interpreter in (bare, signed):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
        interpreter.invoke()
    assert bare.get_signature_list() == {}
    assert [len(d["shape"]) for d in bare.get_output_details()] == [3, 2, 2, 1]  # boxes, classes, scores, count
    count, scores, class_ids, boxes = pycoral_get_objects(signed)
    assert count >= 1
    for got in (pycoral_get_objects(bare), OutputReader(bare).read()):
        assert got[0] == count
        np.testing.assert_array_equal(got[1][:count], scores)
        np.testing.assert_array_equal(np.asarray(got[2][:count]).astype(int), class_ids)
        np.testing.assert_array_equal(got[3][:count], boxes)
    assert OutputReader(bare).source == "tf1-order"
    out = [bare.get_tensor(d["index"]) for d in bare.get_output_details()]  # Frigate's edgetpu_tfl.py
    frigate_boxes, frigate_classes, frigate_scores, frigate_count = out[0][0], out[1][0], out[2][0], int(out[3][0])
    assert frigate_count == count
    np.testing.assert_array_equal(frigate_scores[:count], scores)
    np.testing.assert_array_equal(frigate_classes[:count].astype(int), class_ids)
    np.testing.assert_array_equal(frigate_boxes[:count], boxes)


@pytest.mark.slow
def test_int8_reproduces_float_detections(converted):
    from edge_trash.export.parity import ImageDetections, reproduced_fraction

    model, tflite_bytes, config = converted
    interpreter = _interpreter(tflite_bytes)
    runner = interpreter.get_signature_runner()
    reference, candidate = {}, {}
    for i, image in enumerate(random_images(4, seed=11, low=LOW, high=HIGH)):
        box_encodings, class_logits = (t.numpy() for t in model(image[None].astype(np.float32)))
        reference[i] = ImageDetections(*reference_postprocess(box_encodings, class_logits, tiny_anchors(), config))
        out = runner(images=image[None])
        n = int(out["output_0"][0])
        candidate[i] = ImageDetections(out["output_3"][0][:n], out["output_2"][0][:n].astype(int),
                                       out["output_1"][0][:n])
        # Same top detection: class and a box within quantization error.
        assert candidate[i].class_ids[0] == reference[i].class_ids[0] == PLANTED - 1
        assert abs(candidate[i].scores[0] - reference[i].scores[0]) < 0.05
    # The confident float detections survive quantization.
    result = reproduced_fraction(reference, candidate, min_score=0.6)
    assert result["total"] >= 8 and result["fraction"] >= 0.8, result


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Warning. Enabling .experimental_preserve_all_tensors.")
def test_postprocess_op_decodes_its_inputs_like_the_reference(converted):
    """Exactly what the op computes from its (dequantized) inputs: box decoding with the anchors and
    scales, per-class NMS, class offset. Isolates the postprocess from quantization error."""
    from ai_edge_litert.interpreter import Interpreter

    _, tflite_bytes, config = converted
    interpreter = Interpreter(model_content=tflite_bytes, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    op = next(o for o in interpreter._get_ops_details() if o["op_name"] == "TFLite_Detection_PostProcess")
    anchors = interpreter.get_tensor(op["inputs"][2])
    np.testing.assert_allclose(anchors, tiny_anchors(), atol=1e-6)  # (ycenter, xcenter, h, w) layout
    for seed in (1, 2):
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"],
                               random_images(1, seed=seed, low=LOW, high=HIGH)[0][None])
        interpreter.invoke()
        box_encodings, scores = interpreter.get_tensor(op["inputs"][0]), interpreter.get_tensor(op["inputs"][1])
        boxes, classes, ref_scores = reference_postprocess(box_encodings, None, anchors, config, scores=scores)
        count, out_scores, out_classes, out_boxes = pycoral_get_objects(interpreter)
        assert count == len(ref_scores)
        np.testing.assert_allclose(out_scores, ref_scores, atol=1e-6)
        # Quantized scores tie, so equal-score detections may come in another order: match each
        # output detection to a reference one with the same class, score and box.
        same = sum(1 for c, sc, box in zip(out_classes, out_scores, out_boxes)
                   if any(c == rc and abs(sc - rs) < 1e-6 and np.allclose(box, rb, atol=1e-5)
                          for rc, rs, rb in zip(classes, ref_scores, boxes)))
        assert same >= 0.9 * count, (same, count)


def _move_first_dequantize_forward(tflite_bytes: bytes) -> bytes:
    """Undo defer_cpu_tail: put the first DEQUANTIZE right after the op producing its input."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    ops = list(graph.operators)
    deq = next(op for op in ops if codes[op.opcodeIndex] == 6)
    producer = next(i for i, op in enumerate(ops) if deq.inputs[0] in list(op.outputs))
    ops.remove(deq)
    ops.insert(producer + 1, deq)
    graph.operators = ops
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


@pytest.mark.slow
def test_gate_names_a_dequantize_that_cuts_the_graph_and_defer_fixes_it(converted):
    from edge_trash.export.detection_tflite import defer_cpu_tail
    from edge_trash.export.edgetpu_gate import check

    _, tflite_bytes, _ = converted
    bad = _move_first_dequantize_forward(tflite_bytes)
    gate = check(bad)
    assert not gate.ok
    assert "DEQUANTIZE" in gate.message and "blocks the Edge TPU" in gate.message
    assert "in execution order" in gate.message
    fixed = defer_cpu_tail(bad)
    assert check(fixed).ok
    # Reordering changes nothing the interpreter computes.
    image = random_images(1, seed=3)[0][None]
    a = _interpreter(tflite_bytes).get_signature_runner()(images=image)
    b = _interpreter(fixed).get_signature_runner()(images=image)
    n = int(a["output_0"][0])
    assert n == int(b["output_0"][0])
    for key in ("output_1", "output_2", "output_3"):
        np.testing.assert_array_equal(a[key][0][:n], b[key][0][:n])


@pytest.mark.slow
def test_gate_names_a_non_edgetpu_op():
    from edge_trash.export.detection_tflite import convert_to_int8_detection_tflite, postprocess_params_from_config
    from edge_trash.export.edgetpu_gate import check

    config = TinyConfig()
    model = tiny_ssd(config.num_classes, activation="leaky_relu")
    tflite_bytes = convert_to_int8_detection_tflite(model, tiny_anchors(), postprocess_params_from_config(config),
                                                    lambda: random_images(4))
    gate = check(tflite_bytes)
    assert not gate.ok
    assert "LEAKY_RELU" in gate.message and "blocks the Edge TPU" in gate.message
    assert "ReLU" in gate.message  # the fix
    assert gate.summary["cpu_op_names"][0] == "LEAKY_RELU"


def test_postprocess_params_validate_and_read_config():
    from edge_trash.export.detection_tflite import PostprocessParams, _implements_signature, \
        postprocess_params_from_config

    params = postprocess_params_from_config(TinyConfig(max_detections=7, iou_threshold=0.45))
    assert (params.num_classes, params.max_detections, params.iou_threshold) == (3, 7, 0.45)
    # Per-class NMS keeping up to max_detections per class, like the float decoder's combined NMS.
    assert params.use_regular_nms is True and params.detections_per_class == 7
    text = _implements_signature(params)
    assert 'name: "TFLite_Detection_PostProcess"' in text
    assert 'key: "max_detections" value { i: 7 }' in text and 'key: "num_classes" value { i: 3 }' in text
    assert 'key: "h_scale" value { f: 5.000000 }' in text
    assert 'key: "use_regular_nms" value { b: true }' in text
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        PostprocessParams(3, 10, 0.05, 0.0).validate()
    with pytest.raises(ValueError, match="box_scales"):
        PostprocessParams(3, 10, 0.05, 0.5, box_scales=(10.0, 10.0, 5.0)).validate()


def test_build_module_rejects_mismatched_anchors():
    from edge_trash.export.detection_tflite import build_detection_module, postprocess_params_from_config

    config = TinyConfig()
    with pytest.raises(ValueError, match="anchors"):
        build_detection_module(tiny_ssd(config.num_classes), tiny_anchors()[:-2],
                               postprocess_params_from_config(config))
    with pytest.raises(ValueError, match="num_classes"):
        build_detection_module(tiny_ssd(4), tiny_anchors(), postprocess_params_from_config(config))


@pytest.mark.slow
def test_gate_names_an_op_version_the_compiler_cannot_parse(converted):
    from tensorflow.lite.tools import flatbuffer_utils

    from edge_trash.export.edgetpu_gate import check

    _, tflite_bytes, _ = converted
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
    quantize = next(c for c in model.operatorCodes if max(c.builtinCode, c.deprecatedBuiltinCode) == 114)
    quantize.version = 3  # per-channel QUANTIZE: newer than compiler 16 parses
    gate = check(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    assert not gate.ok and gate.summary["compiler_can_parse"] is False
    assert "QUANTIZE (version 3) blocks the Edge TPU" in gate.message
    assert "TensorFlow 2.5" in gate.message


@pytest.mark.slow
def test_evaluator_keeps_every_class_of_the_per_class_nms(tmp_path):
    """The evaluator runs detection models on one thread: with two, ai-edge-litert's regular NMS
    drops a whole class (tensorflow/tensorflow#56058; here class 3 of 3 vanishes)."""
    from edge_trash.export.detection_tflite import convert_to_int8_detection_tflite, postprocess_params_from_config
    from edge_trash.train.evaluate import TFLiteDetector, stretch_resize

    config = TinyConfig()
    tflite_bytes = convert_to_int8_detection_tflite(tiny_ssd(config.num_classes), tiny_anchors(),
                                                    postprocess_params_from_config(config),
                                                    lambda: random_images(16))
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tflite_bytes)
    detector = TFLiteDetector(path)
    reference = _interpreter(tflite_bytes)  # the runtime's default thread count: one
    runner = reference.get_signature_runner()
    seen = set()
    for image in random_images(20, seed=5):
        boxes, classes, scores = detector.detect(image)
        out = runner(images=stretch_resize(image, config.input_size)[None])
        n = int(out["output_0"][0])
        np.testing.assert_array_equal(classes, out["output_2"][0][:n].astype(np.int64) + 1)
        np.testing.assert_allclose(scores, out["output_1"][0][:n])
        seen.update(int(c) for c in classes)
    assert seen == {1, 2, 3}
