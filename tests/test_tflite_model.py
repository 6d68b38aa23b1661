"""The flatbuffer reader, checked against the TFLite interpreter's own view of real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_trash.export.tflite_model import TfliteFormatError, builtin_op_name, read_tflite

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "edgetpu" / "models"
ALL_MODELS = sorted(MODELS.glob("*.tflite")) if MODELS.is_dir() else []
DEEPLAB = MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite"

pytestmark = pytest.mark.skipif(not ALL_MODELS, reason=f"{MODELS} (shared models) not present")


def _interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path))


@pytest.mark.parametrize("path", ALL_MODELS, ids=lambda p: p.stem)
def test_ops_and_tensors_match_the_tflite_interpreter(path):
    model = read_tflite(path)
    interp = _interpreter(path)
    ops = interp._get_ops_details()
    details = {d["index"]: d for d in interp.get_tensor_details()}
    assert [op.name for op in model.ops] == [d["op_name"] for d in ops]
    for op, ref in zip(model.ops, ops):
        assert [t.index if t else -1 for t in op.inputs] == ref["inputs"].tolist()
        assert [t.index for t in op.outputs] == ref["outputs"].tolist()
        for tensor in [t for t in (*op.inputs, *op.outputs) if t is not None]:
            d = details[tensor.index]
            assert tensor.name == d["name"]
            assert tensor.shape == tuple(d["shape"].tolist())
            assert np.dtype(tensor.dtype) == np.dtype(d["dtype"])
            q = d["quantization_parameters"]
            if tensor.quantization is None:
                assert q["scales"].size == 0
            else:
                np.testing.assert_allclose(tensor.quantization.scale, q["scales"], rtol=1e-6)
                assert list(tensor.quantization.zero_point) == q["zero_points"].tolist()
                assert tensor.quantization.axis == q["quantized_dimension"]
                assert tensor.quantization.per_channel == (q["scales"].size > 1)
    assert [t.index for t in model.inputs] == [d["index"] for d in interp.get_input_details()]
    assert [t.index for t in model.outputs] == [d["index"] for d in interp.get_output_details()]


def test_constant_values_and_parameter_bytes_match_the_interpreter():
    model = read_tflite(DEEPLAB)
    interp = _interpreter(DEEPLAB)
    interp.allocate_tensors()
    produced = {t.index for op in model.ops for t in op.outputs} | set(model.input_indices)
    expected_bytes = 0
    for d in interp.get_tensor_details():
        if d["index"] in produced:
            continue
        expected_bytes += int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize
        tensor = model.tensors[d["index"]]
        assert tensor.constant
        np.testing.assert_array_equal(tensor.values(), interp.get_tensor(d["index"]))
    assert model.parameter_bytes == expected_bytes
    assert model.ops[64].inputs[1].values().tolist() == [33, 33]  # RESIZE_BILINEAR size operand


def test_versions_options_and_custom_codes():
    deeplab = read_tflite(DEEPLAB)
    assert {op.name: op.version for op in deeplab.ops} == {
        "CONV_2D": 1, "DEPTHWISE_CONV_2D": 2, "ADD": 1, "AVERAGE_POOL_2D": 1, "RESIZE_BILINEAR": 1,
        "QUANTIZE": 1, "CONCATENATION": 1, "ARG_MAX": 1}
    assert deeplab.ops[64].options == {"AlignCorners": True, "HalfPixelCenters": False}
    assert deeplab.ops[0].options["StrideH"] == 2 and deeplab.ops[0].options["DilationWFactor"] == 1
    assert deeplab.ops[0].options["FusedActivationFunction"] == 3  # RELU6
    ssd = read_tflite(MODELS / "ssd_mobilenet_v2_coco_quant_postprocess_segment_1_of_2_edgetpu.tflite")
    assert [(op.name, op.custom_code, op.table_name) for op in ssd.ops] == [
        ("edgetpu-custom-op", "edgetpu-custom-op", "CUSTOM"), ("DEQUANTIZE", None, "DEQUANTIZE"),
        ("DEQUANTIZE", None, "DEQUANTIZE"),
        ("TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess", "CUSTOM")]
    assert [t.dtype for t in ssd.ops[3].outputs] == ["float32"] * 4


def test_bytes_and_path_give_the_same_model():
    from_path = read_tflite(DEEPLAB)
    from_bytes = read_tflite(DEEPLAB.read_bytes())
    assert from_bytes.source == "<bytes>" and from_path.source == str(DEEPLAB)
    assert from_bytes.ops == from_path.ops
    assert from_bytes.file_bytes == DEEPLAB.stat().st_size


def test_builtin_op_name():
    assert builtin_op_name(3) == "CONV_2D"
    assert builtin_op_name(150) == "GELU"
    assert builtin_op_name(9999) == "BUILTIN_9999"


def test_not_a_tflite_file_names_the_file_and_the_expectation(tmp_path):
    bad = tmp_path / "labels.txt"
    bad.write_text("background\nbottle\ncan\n")
    with pytest.raises(TfliteFormatError, match=r"labels\.txt: not a TFLite model: expected the flatbuffer "
                                                r"identifier 'TFL3' at bytes 4-8"):
        read_tflite(bad)
    with pytest.raises(TfliteFormatError, match="<bytes>: not a TFLite model"):
        read_tflite(b"")


def test_truncated_file_names_the_file(tmp_path):
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(DEEPLAB.read_bytes()[:4096])
    with pytest.raises(TfliteFormatError, match=r"cut\.tflite: corrupt or truncated TFLite flatbuffer"):
        read_tflite(cut)


def test_missing_file(tmp_path):
    with pytest.raises(TfliteFormatError, match=r"missing\.tflite: cannot read the file"):
        read_tflite(tmp_path / "missing.tflite")
