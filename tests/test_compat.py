"""Edge TPU compatibility prediction: real compiled pairs, each limit, the single cut, the CLI."""

from __future__ import annotations

import functools
import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import numpy as np
import pytest
from click.testing import CliRunner

from edge_trash.export import edgetpu_ops as rules
from edge_trash.export.compat import (AFTER_CUT_REASON, PARAMETER_CACHE_BYTES, STATUS_NOT_PARSED,
                                      STATUS_NOT_QUANTIZED, inspect_tflite, summary_line)
from edge_trash.export.inspect_cli import next_step
from edge_trash.export.tflite_model import OpInfo, Quantization, TensorInfo, TfliteModel, read_tflite

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "edgetpu"
MODELS = SHARED / "models"
LOGS = SHARED / "compiler-logs"
PAIRS = sorted(p for p in MODELS.glob("*.tflite") if (MODELS / f"{p.stem}_edgetpu.tflite").is_file()) \
    if MODELS.is_dir() else []
SSD_SEGMENT = MODELS / "ssd_mobilenet_v2_coco_quant_postprocess_segment_1_of_2_edgetpu.tflite"
pytestmark = pytest.mark.filterwarnings("ignore:Statistics for quantized inputs:UserWarning")
needs_shared = pytest.mark.skipif(not PAIRS, reason=f"{MODELS} (shared models) not present")


# ---- ground truth: Coral's compiled pairs ------------------------------------------------------

@needs_shared
def test_three_pairs_are_present():
    assert [p.stem for p in PAIRS] == ["deeplabv3_mnv2_dm05_pascal_quant", "keras_lstm_mnist_ptq",
                                       "mobilenet_v1_0.25_128_quant"]


@needs_shared
@pytest.mark.parametrize("path", PAIRS, ids=lambda p: p.stem)
def test_prediction_equals_what_the_real_compiler_did(path):
    predicted = inspect_tflite(path)
    compiled = inspect_tflite(MODELS / f"{path.stem}_edgetpu.tflite")
    assert not predicted.compiled and compiled.compiled
    assert predicted.compiler_can_parse and predicted.compiler_error is None
    assert predicted.cpu_op_names() == compiled.cpu_op_names()
    assert predicted.cpu_ops == compiled.cpu_ops
    assert compiled.edgetpu_ops == 1  # one edgetpu-custom-op holds every mapped op
    assert predicted.edgetpu_ops == len(predicted.ops) - compiled.cpu_ops


@needs_shared
def test_deeplab_single_cut_at_resize_bilinear():
    report = inspect_tflite(MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite")
    assert (report.edgetpu_ops, report.cpu_ops) == (64, 8)
    assert report.cut_op.index == 64 and report.cut_op.name == "RESIZE_BILINEAR"
    assert report.first_cpu_op.index == 64
    assert report.ops[64].status == rules.STATUS_LIMITATION
    assert report.ops[64].reason == "RESIZE_BILINEAR with align_corners from a 1x1 input (precision limit)"
    for op in report.ops[65:71]:  # supported ops after the cut
        assert op.status == rules.STATUS_AFTER_CUT
        assert op.reason == f"{AFTER_CUT_REASON}: op 64 RESIZE_BILINEAR"
    assert report.ops[71].name == "ARG_MAX" and report.ops[71].status == rules.STATUS_DTYPE
    assert all(op.on_edgetpu for op in report.ops[:64])
    assert report.fits_parameter_cache


@needs_shared
def test_compiled_ssd_segment_cpu_tail():
    report = inspect_tflite(SSD_SEGMENT)
    assert report.compiled
    assert [(op.name, op.on_edgetpu) for op in report.ops] == [
        ("edgetpu-custom-op", True), ("DEQUANTIZE", False), ("DEQUANTIZE", False),
        ("TFLite_Detection_PostProcess", False)]
    assert (report.edgetpu_ops, report.cpu_ops) == (1, 3)
    assert report.first_cpu_op.name == "DEQUANTIZE" and report.cut_op.index == 1
    # The file's only constants are the postprocess's float anchors (30672 B): CPU data, no Edge TPU parameters.
    assert read_tflite(SSD_SEGMENT).parameter_bytes == 30672 and report.parameter_bytes == 0
    assert summary_line(report) == (
        "ssd_mobilenet_v2_coco_quant_postprocess_segment_1_of_2_edgetpu.tflite: compiled; "
        "1 edgetpu-custom-op, 3 CPU ops (DEQUANTIZE x2, TFLite_Detection_PostProcess)")


@needs_shared
@pytest.mark.parametrize("path", PAIRS, ids=lambda p: p.stem)
def test_parameter_bytes_are_the_constants_the_real_compiler_moved_into_the_edge_tpu(path):
    """The compiled file keeps only the constants of its CPU ops; the rest went into edgetpu-custom-op. The
    prediction counts exactly those (deeplab: not the 2 CONV_2D after the cut, 137576 B; the whole file
    holds 714408 B)."""
    source, compiled = read_tflite(path), read_tflite(MODELS / f"{path.stem}_edgetpu.tflite")
    assert inspect_tflite(path).parameter_bytes == source.parameter_bytes - compiled.parameter_bytes


@needs_shared
def test_json_shape():
    doc = inspect_tflite(MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite").to_json_dict()
    json.dumps(doc)  # serialisable
    assert {"ops", "edgetpu_ops", "cpu_ops", "first_cpu_op", "compiler_can_parse", "compiled",
            "parameter_bytes"} <= set(doc)
    assert {"index", "name", "version", "on_edgetpu", "reason"} <= set(doc["ops"][0])
    assert (doc["edgetpu_ops"], doc["cpu_ops"], doc["compiled"], doc["compiler_can_parse"]) == (64, 8, False, True)
    assert doc["first_cpu_op"]["index"] == 64 and doc["first_cpu_op"]["name"] == "RESIZE_BILINEAR"
    # the smallest on-chip memory (used + remaining) a real compiler 16 log shows: 6.08 MiB (YOLOv5s)
    assert doc["parameter_cache_bytes"] == PARAMETER_CACHE_BYTES == 6375342
    assert (doc["parameter_bytes"], doc["fits_parameter_cache"]) == (576832, True)
    conv = doc["ops"][0]
    assert conv["inputs"][0]["dtype"] == "uint8" and conv["inputs"][0]["shape"] == [1, 513, 513, 3]
    assert conv["inputs"][0]["quantization"]["per_channel"] is False


# ---- each limit on hand-built ops ------------------------------------------------------------

_counter = iter(range(10_000))


def tensor(shape: Sequence[int], dtype: str = "int8", data: Optional[np.ndarray] = None,
           zero_point: int = 0, quantized: bool = True, variable: bool = False, name: str = "") -> TensorInfo:
    """A TensorInfo; ``data`` makes it a constant."""
    index = next(_counter)
    raw = None if data is None else np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
    quant = Quantization((0.05,), (zero_point,)) if quantized and dtype in ("int8", "uint8", "int16") else None
    return TensorInfo(index=index, name=name or f"t{index}", dtype=dtype, shape=tuple(shape),
                      quantization=quant, constant=data is not None, variable=variable,
                      data_bytes=0 if raw is None else raw.size, buffer_index=index + 1 if raw is not None else 0,
                      raw=raw)


def op(name: str, inputs: Sequence[Optional[TensorInfo]], outputs: Sequence[TensorInfo],
       version: int = 1, index: int = 0, code: int = 0, custom: Optional[str] = None, **options: Any) -> OpInfo:
    return OpInfo(index=index, name=name, builtin_code=code, custom_code=custom, version=version,
                  inputs=tuple(inputs), outputs=tuple(outputs), options=dict(options))


def act(*shape: int) -> TensorInfo:
    return tensor(shape)


def i32(values) -> TensorInfo:
    arr = np.asarray(values, dtype=np.int32)
    return tensor(arr.shape, "int32", arr, quantized=False)


def weights(*shape: int) -> TensorInfo:
    return tensor(shape, "int8", np.ones(shape, np.int8))


# (op, expected reason or None). Every op in rules.OP_LIMITS must appear (see the completeness test).
LIMIT_CASES: Dict[str, list] = {
    "MAX_POOL_2D": [
        (op("MAX_POOL_2D", [act(1, 8, 8, 4)], [act(1, 4, 4, 4)], FusedActivationFunction=1),
         "MAX_POOL_2D has a fused activation (RELU); the Edge TPU needs none here"),
        (op("MAX_POOL_2D", [act(1, 8, 8, 4)], [act(1, 4, 4, 4)], FusedActivationFunction=0), None)],
    "AVERAGE_POOL_2D": [
        (op("AVERAGE_POOL_2D", [act(1, 8, 8, 4)], [act(1, 1, 1, 4)], FusedActivationFunction=3),
         "AVERAGE_POOL_2D has a fused activation (RELU6); the Edge TPU needs none here")],
    "CONCATENATION": [
        (op("CONCATENATION", [act(1, 4, 4, 2), act(1, 4, 4, 2)], [act(1, 4, 4, 4)], FusedActivationFunction=1),
         "CONCATENATION has a fused activation (RELU); the Edge TPU needs none here"),
        (op("CONCATENATION", [act(1, 4, 4, 2), tensor((1, 4, 4, 2), data=np.zeros((1, 4, 4, 2), np.int8)),
                              act(1, 4, 4, 2)], [act(1, 4, 4, 6)]),
         "CONCATENATION has a constant input among 3 inputs; a constant is allowed only as one of exactly "
         "2 inputs"),
        (op("CONCATENATION", [act(1, 4, 4, 2), tensor((1, 4, 4, 2), data=np.ones((1, 4, 4, 2), np.int8),
                                                      name="bias_map")], [act(1, 4, 4, 4)]),
         "CONCATENATION has a constant input 'bias_map' that is not all zeros"),
        # all zeros in real terms: every quantized value equals the zero point
        (op("CONCATENATION", [act(1, 4, 4, 2), tensor((1, 4, 4, 2), data=np.full((1, 4, 4, 2), -3, np.int8),
                                                      zero_point=-3)], [act(1, 4, 4, 4)]), None),
        (op("CONCATENATION", [act(1, 4, 4, 2), act(1, 4, 4, 2)], [act(1, 4, 4, 4)]), None)],
    "CONV_2D": [
        (op("CONV_2D", [act(1, 8, 8, 3), weights(4, 3, 3, 3), i32([0] * 4)], [act(1, 8, 8, 4)],
            DilationHFactor=2, DilationWFactor=1), "CONV_2D dilation differs in y and x (2 vs 1)"),
        (op("CONV_2D", [act(1, 8, 8, 3), weights(4, 3, 3, 3), i32([0] * 4)], [act(1, 8, 8, 4)],
            DilationHFactor=2, DilationWFactor=2), None),
        (op("CONV_2D", [act(1, 8, 8, 3), tensor((4, 3, 3, 3), name="w_in"), i32([0] * 4)], [act(1, 8, 8, 4)]),
         "CONV_2D weights 'w_in' are not constant")],
    "DEPTHWISE_CONV_2D": [
        (op("DEPTHWISE_CONV_2D", [act(1, 8, 8, 3), weights(1, 3, 3, 3), i32([0] * 3)], [act(1, 8, 8, 3)],
            DilationHFactor=1, DilationWFactor=3), "DEPTHWISE_CONV_2D dilation differs in y and x (1 vs 3)")],
    "TRANSPOSE_CONV": [
        (op("TRANSPOSE_CONV", [i32([1, 16, 16, 4]), tensor((4, 3, 3, 8), name="w"), act(1, 8, 8, 8)],
            [act(1, 16, 16, 4)]), "TRANSPOSE_CONV weights 'w' are not constant")],
    "FULLY_CONNECTED": [
        (op("FULLY_CONNECTED", [act(1, 16), weights(10, 16), i32([0] * 10)], [act(1, 10)], WeightsFormat=1),
         "FULLY_CONNECTED uses weights format 1 (shuffled); only the default format maps"),
        (op("FULLY_CONNECTED", [act(2, 16), weights(10, 16), i32([0] * 10)], [act(2, 10)]),
         "FULLY_CONNECTED output [2, 10] is not 1-D"),
        (op("FULLY_CONNECTED", [act(1, 16), weights(10, 16), i32([0] * 10)], [act(1, 10)]), None)],
    "MEAN": [
        (op("MEAN", [act(1, 4, 4, 6), i32([3])], [act(1, 4, 4, 1)]),
         "MEAN reduces over depth 6, which is not a multiple of 4"),
        (op("MEAN", [act(1, 4, 4, 8), i32([-1])], [act(1, 4, 4, 1)]), None),
        (op("MEAN", [act(1, 4, 4, 6), i32([0, 1])], [act(1, 1, 4, 6)]),
         "MEAN reduces over the batch dimension (axis 0 of [1, 4, 4, 6])"),
        (op("MEAN", [act(1, 4, 4, 6), i32([1, 2])], [act(1, 1, 1, 6)]), None)],
    "REDUCE_MAX": [
        (op("REDUCE_MAX", [act(1, 4, 4, 6), i32([0])], [act(4, 4, 6)]),
         "REDUCE_MAX reduces over the batch dimension (axis 0 of [1, 4, 4, 6])")],
    "REDUCE_MIN": [(op("REDUCE_MIN", [act(1, 4, 4, 6), i32([1, 2])], [act(1, 6)]), None)],
    "SUM": [(op("SUM", [act(1, 4, 4, 6), act(1)], [act(1, 6)]), "SUM axis is not a constant input"),
            (op("SUM", [act(1, 4, 4, 6)], [act(1, 6)]),
             "SUM has 1 inputs and 1 outputs, not the operands the TFLite schema defines for it")],
    "PAD": [
        (op("PAD", [act(1, 4, 4, 3), i32([[1, 0], [1, 1], [1, 1], [0, 0]])], [act(2, 6, 6, 3)]),
         "PAD pads the batch dimension ([1, 0])"),
        (op("PAD", [act(1, 4, 4, 3), i32([[0, 0], [1, 1], [1, 1], [0, 0]])], [act(1, 6, 6, 3)]), None)],
    "PRELU": [
        (op("PRELU", [act(1, 8, 8, 4), weights(8, 8, 4)], [act(1, 8, 8, 4)]),
         "PRELU alpha has shape [8, 8, 4]; it must be 1-D (Keras shared_axes=[1, 2])"),
        (op("PRELU", [act(1, 8, 8, 4), weights(1, 1, 4)], [act(1, 8, 8, 4)]), None)],
    "SOFTMAX": [
        (op("SOFTMAX", [act(1, 16001)], [act(1, 16001)]), "SOFTMAX input has 16001 elements, above 16000"),
        (op("SOFTMAX", [act(1, 16000)], [act(1, 16000)]), None),
        (op("SOFTMAX", [act(1, 8, 6)], [act(1, 8, 6)]), "SOFTMAX input [1, 8, 6] is not 1-D")],
    "STRIDED_SLICE": [
        (op("STRIDED_SLICE", [act(1, 8, 8, 4), i32([0] * 4), i32([1, 8, 8, 4]), i32([1, 2, 2, 1])],
            [act(1, 4, 4, 4)]), "STRIDED_SLICE strides are [1, 2, 2, 1]; all must be 1"),
        (op("STRIDED_SLICE", [act(1, 8, 8, 4), i32([0] * 4), i32([1, 8, 8, 2]), i32([1] * 4)],
            [act(1, 8, 8, 2)], EllipsisMask=1), "STRIDED_SLICE ellipsis_mask is 1; it must be 0"),
        (op("STRIDED_SLICE", [act(1, 8, 8, 4), i32([0] * 4), i32([1, 8, 8, 2]), i32([1] * 4)],
            [act(1, 8, 8, 2)], NewAxisMask=2), "STRIDED_SLICE new_axis_mask is 2; it must be 0"),
        (op("STRIDED_SLICE", [act(1, 8, 8, 4), i32([0] * 4), i32([1, 8, 8, 2]), i32([1] * 4)],
            [act(1, 8, 8, 2)]), None)],
    "SQUEEZE": [
        (op("SQUEEZE", [act(1, 1, 1, 8)], [act(1, 8)], SqueezeDims=[1, 2]), None),
        (op("SQUEEZE", [act(1, 4, 1, 8)], [act(1, 4, 8)], SqueezeDims=[2]),
         "SQUEEZE drops dims [2] of [1, 4, 1, 8] after a non-unit dim (needs a relayout)")],
    "RESIZE_BILINEAR": [
        (op("RESIZE_BILINEAR", [act(1, 1, 1, 8), i32([33, 33])], [act(1, 33, 33, 8)], AlignCorners=True),
         "RESIZE_BILINEAR with align_corners from a 1x1 input (precision limit)"),
        (op("RESIZE_BILINEAR", [act(1, 1, 1, 8), i32([33, 33])], [act(1, 33, 33, 8)], AlignCorners=False),
         None),
        (op("RESIZE_BILINEAR", [act(1, 2, 2, 8), i32([4, 4])], [act(1, 4, 4, 8)], AlignCorners=True), None)],
    "RESIZE_NEAREST_NEIGHBOR": [
        (op("RESIZE_NEAREST_NEIGHBOR", [act(1, 4, 4, 8), i32([8, 8])], [act(1, 8, 8, 8)]), None)],
    "PACK": [
        (op("PACK", [act(4, 4), act(4, 4)], [act(2, 4, 4)], Axis=0, ValuesCount=2),
         "PACK stacks along axis 0 (the batch dimension)"),
        (op("PACK", [act(4, 4), act(4, 4)], [act(4, 4, 2)], Axis=2, ValuesCount=2), None)],
    "SPLIT": [
        (op("SPLIT", [i32(0), act(2, 4, 4, 8)], [act(1, 4, 4, 8), act(1, 4, 4, 8)], NumSplits=2),
         "SPLIT splits the batch dimension"),
        (op("SPLIT", [i32(3), act(1, 4, 4, 8)], [act(1, 4, 4, 4), act(1, 4, 4, 4)], NumSplits=2), None)],
}


def test_every_limit_has_cases():
    assert set(LIMIT_CASES) == set(rules.OP_LIMITS)


@pytest.mark.parametrize("case", [(name, i) for name, cases in LIMIT_CASES.items() for i in range(len(cases))],
                         ids=lambda c: f"{c[0]}-{c[1]}")
def test_limit(case):
    name, i = case
    the_op, expected = LIMIT_CASES[name][i]
    assert rules.limit_problem(the_op) == expected


def test_batch_and_rank_limit():
    bad = tensor((2, 8, 8, 3), name="images")
    assert rules.activation_rank_problem(op("ADD", [bad, act(1, 8, 8, 3)], [act(1, 8, 8, 3)])) == (
        "tensor 'images' has shape [2, 8, 8, 3]: only the 3 innermost dimensions may exceed 1 (batch must be 1)")
    assert rules.activation_rank_problem(op("ADD", [act(1, 1, 8, 8, 3)], [act(1, 1, 8, 8, 3)])) is None


def test_data_types():
    floaty = tensor((1, 4), "float32", name="logits", quantized=False)
    assert rules.dtype_problem(op("DEQUANTIZE", [act(1, 4)], [floaty])) == (
        "output 0 (tensor 'logits') is float32: the Edge TPU needs int8/uint8 quantized tensors")
    assert rules.dtype_problem(op("ADD", [tensor((1, 4), "int16", name="x16"), act(1, 4)], [act(1, 4)])) == (
        "input 0 (tensor 'x16') is int16: the Edge TPU needs int8/uint8 quantized tensors")
    float_w = tensor((4, 1, 1, 4), "float32", np.ones((4, 1, 1, 4), np.float32), quantized=False, name="w")
    assert rules.dtype_problem(op("CONV_2D", [act(1, 2, 2, 4), float_w], [act(1, 2, 2, 4)])) == (
        "input 1 (constant 'w') is float32: the Edge TPU needs int8/uint8 quantized tensors")
    # int32 bias constants, omitted optional inputs and LSTM int16 state tensors are fine
    state = tensor((1, 20), "int16", variable=True)
    assert rules.dtype_problem(op("UNIDIRECTIONAL_SEQUENCE_LSTM", [act(1, 28, 28), None, state, i32([1])],
                                  [act(1, 28, 20)])) is None


@pytest.mark.parametrize("name, code, version, expected", [
    ("CONV_2D", 3, 5, None),
    ("CONV_2D", 3, 6, "CONV_2D version 6 is above 5, the highest the Edge TPU compiler 16.0 parses "
                      "(Didn't find op for builtin opcode 'CONV_2D' version '6')"),
    ("QUANTIZE", 114, 3, "QUANTIZE version 3 is above 2, the highest the Edge TPU compiler 16.0 parses "
                         "(Didn't find op for builtin opcode 'QUANTIZE' version '3')"),
    ("TRANSPOSE_CONV", 67, 4, "TRANSPOSE_CONV version 4 is above 3, the highest the Edge TPU compiler 16.0 "
                              "parses (Didn't find op for builtin opcode 'TRANSPOSE_CONV' version '4')"),
    ("HASHTABLE_SIZE", 139, 1, None),
    ("READ_VARIABLE", 143, 1, "READ_VARIABLE (builtin code 143) is newer than TensorFlow 2.5: the Edge TPU "
                              "compiler 16.0 cannot parse it"),
])
def test_version_problem(name, code, version, expected):
    assert rules.version_problem(op(name, [], [], version=version, code=code)) == expected


def test_custom_ops_always_parse():
    assert rules.version_problem(op("TFLite_Detection_PostProcess", [], [], version=9, code=32,
                                    custom="TFLite_Detection_PostProcess")) is None


# ---- the single cut on a hand-built model ------------------------------------------------------

def _model(ops: Sequence[OpInfo], inputs: Sequence[TensorInfo]) -> TfliteModel:
    ops = [OpInfo(index=i, name=o.name, builtin_code=o.builtin_code, custom_code=o.custom_code,
                  version=o.version, inputs=o.inputs, outputs=o.outputs, options=o.options)
           for i, o in enumerate(ops)]
    tensors = {t.index: t for o in ops for t in (*o.inputs, *o.outputs) if t is not None}
    table = [tensors.get(i) for i in range(max(tensors) + 1)]
    return TfliteModel(source="hand.tflite", schema_version=3, subgraph_count=1, ops=ops, tensors=table,
                       input_indices=tuple(t.index for t in inputs), output_indices=(ops[-1].outputs[0].index,),
                       parameter_bytes=sum(t.data_bytes for t in tensors.values()), file_bytes=0)


def test_single_cut_float_input_quantize_and_own_problems_after_the_cut():
    image = tensor((1, 8, 8, 3), "float32", quantized=False, name="image")
    q = act(1, 8, 8, 3)
    c1 = act(1, 8, 8, 4)
    lr = act(1, 8, 8, 4)
    c2 = act(1, 8, 8, 4)
    out = tensor((1, 8, 8, 4), "float32", quantized=False, name="out")
    ops = [op("QUANTIZE", [image], [q]),
           op("CONV_2D", [q, weights(4, 1, 1, 3), i32([0] * 4)], [c1]),
           op("LEAKY_RELU", [c1], [lr]),
           op("CONV_2D", [lr, weights(4, 1, 1, 4), i32([0] * 4)], [c2]),
           op("DEQUANTIZE", [c2], [out])]
    report = inspect_tflite(_model(ops, [image]))
    assert [(v.name, v.on_edgetpu, v.status) for v in report.ops] == [
        ("QUANTIZE", False, rules.STATUS_LIMITATION),
        ("CONV_2D", True, rules.STATUS_MAPPED),
        ("LEAKY_RELU", False, rules.STATUS_NOT_SUPPORTED),
        ("CONV_2D", False, rules.STATUS_AFTER_CUT),
        ("DEQUANTIZE", False, rules.STATUS_DTYPE)]
    assert report.ops[0].reason == ("QUANTIZE of the float model input stays on the CPU in front of the "
                                    "Edge TPU subgraph (does not cut the graph)")
    assert report.ops[2].reason == "LEAKY_RELU is not an Edge TPU op"
    assert report.ops[3].reason == "after the first CPU op (single subgraph): op 2 LEAKY_RELU"
    assert report.first_cpu_op.index == 0 and report.cut_op.index == 2
    assert (report.edgetpu_ops, report.cpu_ops) == (1, 4)
    assert summary_line(report).startswith(
        "hand.tflite: 1 of 5 ops on the Edge TPU, 4 on the CPU; CPU from op 2 LEAKY_RELU "
        "(LEAKY_RELU is not an Edge TPU op); Edge TPU parameters ")
    # inspect's next line: the command, and what keeps the ops from the cut on the CPU (not the leading QUANTIZE)
    assert next_step(report, Path("/models/hand.tflite")) == (
        "next: edgetpu_compiler --out_dir /models --show_operations /models/hand.tflite on an x86-64 Linux machine; "
        "to move op 2 LEAKY_RELU and the 1 op after it onto the Edge TPU: use ReLU/ReLU6 or PReLU with "
        "shared_axes=[1,2]")  # the CONV_2D after it; the final DEQUANTIZE stays on the CPU anyway


def test_inspect_names_a_dequantize_in_the_middle_as_the_cut_and_its_fix():
    """Q -> CONV -> DEQUANTIZE (an output) -> CONV -> DEQUANTIZE: the early DEQUANTIZE cuts the graph; inspect's
    next line said only the compiler command (it looked for the first op outside the CPU tail: none before)."""
    image = tensor((1, 8, 8, 3), "float32", quantized=False, name="image")
    q, c1, c2 = act(1, 8, 8, 3), act(1, 8, 8, 4), act(1, 8, 8, 4)
    o1 = tensor((1, 8, 8, 4), "float32", quantized=False, name="o1")
    o2 = tensor((1, 8, 8, 4), "float32", quantized=False, name="o2")
    ops = [op("QUANTIZE", [image], [q]),
           op("CONV_2D", [q, weights(4, 1, 1, 3), i32([0] * 4)], [c1]),
           op("DEQUANTIZE", [c1], [o1]),
           op("CONV_2D", [c1, weights(4, 1, 1, 4), i32([0] * 4)], [c2]),
           op("DEQUANTIZE", [c2], [o2])]
    report = inspect_tflite(_model(ops, [image]))
    assert next_step(report, Path("/m/hand.tflite")) == (
        "next: edgetpu_compiler --out_dir /m --show_operations /m/hand.tflite on an x86-64 Linux machine; to move the "
        "1 op after op 2 DEQUANTIZE onto the Edge TPU: dequantize only the final model outputs (defer_cpu_tail "
        "reorders them last)")


def test_float_model_is_not_quantized_and_version_failure_wins():
    image = tensor((1, 8, 8, 3), "float32", quantized=False)
    w = tensor((4, 1, 1, 3), "float32", np.ones((4, 1, 1, 3), np.float32), quantized=False)
    out = tensor((1, 8, 8, 4), "float32", quantized=False)
    report = inspect_tflite(_model([op("CONV_2D", [image, w], [out], code=3)], [image]))
    assert report.compiler_can_parse and report.compiler_error == "Model not quantized"
    assert [(v.on_edgetpu, v.status) for v in report.ops] == [(False, STATUS_NOT_QUANTIZED)]
    assert next_step(report, Path("/models/hand.tflite")) == (
        "fix first: op 0 CONV_2D: a float tensor inside the graph means the op was not quantized: every op before "
        "the postprocess must be int8 (check the representative dataset and TFLITE_BUILTINS_INT8)")

    report = inspect_tflite(_model([op("CONV_2D", [image, w], [out], code=3, version=6)], [image]))
    assert not report.compiler_can_parse
    assert report.compiler_error == "Didn't find op for builtin opcode 'CONV_2D' version '6'"
    assert report.ops[0].status == STATUS_NOT_PARSED and report.edgetpu_ops == 0
    assert next_step(report, Path("/models/hand.tflite")).startswith(
        "fix first: op 0 CONV_2D: the Edge TPU compiler 16 parses TFLite at TensorFlow 2.5 level; CONV_2D must "
        "come out at a lower op version")


def _postprocess_model(weight_bytes: int) -> TfliteModel:
    """uint8 image -> CONV_2D (``weight_bytes`` of int8 weights + a 4 B bias) -> DEQUANTIZE x2 -> the
    detection postprocess with 1917 float anchors (30672 B, as in Coral's SSD MobileNet v2)."""
    image = tensor((1, 1, 1, weight_bytes), "uint8", name="image")
    c = act(1, 1, 1, 1)
    boxes = tensor((1, 1917, 4), "float32", quantized=False)
    scores = tensor((1, 1917, 4), "float32", quantized=False)
    anchors = tensor((1917, 4), "float32", np.ones((1917, 4), np.float32), quantized=False, name="anchors")
    outs = [tensor((1, 10, 4), "float32", quantized=False) for _ in range(4)]
    ops = [op("CONV_2D", [image, weights(1, 1, 1, weight_bytes), i32([0])], [c]),
           op("DEQUANTIZE", [c], [boxes]),
           op("DEQUANTIZE", [c], [scores]),
           op("TFLite_Detection_PostProcess", [boxes, scores, anchors], outs, code=32,
              custom="TFLite_Detection_PostProcess")]
    return _model(ops, [image])


def test_postprocess_anchors_are_not_edgetpu_parameters():
    """Weights that fill the on-chip memory exactly fit; the postprocess's 30672 B of float anchors stay on the
    CPU and do not push them over (counting every constant of the file did)."""
    model = _postprocess_model(PARAMETER_CACHE_BYTES - 4)
    assert model.parameter_bytes == PARAMETER_CACHE_BYTES + 1917 * 4 * 4
    report = inspect_tflite(model)
    assert report.cpu_op_names() == ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    assert report.parameter_bytes == PARAMETER_CACHE_BYTES and report.fits_parameter_cache
    assert summary_line(report) == (
        "hand.tflite: 1 of 4 ops on the Edge TPU, 3 on the CPU; CPU from op 1 DEQUANTIZE "
        f"({report.ops[1].reason}); Edge TPU parameters 6.08 MiB of about 6.08 MiB on-chip memory")
    doc = report.to_json_dict()
    assert (doc["parameter_bytes"], doc["fits_parameter_cache"]) == (PARAMETER_CACHE_BYTES, True)


def test_parameters_over_the_on_chip_memory_are_reported_exactly():
    report = inspect_tflite(_postprocess_model(7 * 1024 * 1024))  # 7 MiB: over 6.08, under the 7.50 some runs had
    assert report.parameter_bytes == 7 * 1024 * 1024 + 4 and not report.fits_parameter_cache
    assert summary_line(report).endswith(
        "; Edge TPU parameters 7.00 MiB of about 6.08 MiB on-chip memory (may NOT fit: real compiler 16 runs could "
        "cache 6.08 MiB to 7.50 MiB, depending on the model; what does not fit streams from host memory every "
        "inference, which is slow)")
    assert report.to_json_dict()["fits_parameter_cache"] is False


def test_a_constant_shared_with_a_cpu_op_counts_once_and_cpu_only_constants_not_at_all():
    x = act(1, 8, 8, 4)
    k = tensor((1, 1, 1, 4), data=np.ones((1, 1, 1, 4), np.int8), name="k")  # 4 B, read on both sides of the cut
    a1, lr, a2, c = act(1, 8, 8, 4), act(1, 8, 8, 4), act(1, 8, 8, 4), act(1, 8, 8, 4)
    ops = [op("ADD", [x, k], [a1]),
           op("LEAKY_RELU", [a1], [lr]),
           op("ADD", [lr, k], [a2]),
           op("CONV_2D", [a2, weights(4, 1, 1, 4), i32([0] * 4)], [c])]  # after the cut: 16 + 16 B on the CPU
    report = inspect_tflite(_model(ops, [x]))
    assert [v.on_edgetpu for v in report.ops] == [True, False, False, False]
    assert report.parameter_bytes == 4


# ---- real conversions with TensorFlow (small models) --------------------------------------------

@functools.lru_cache(maxsize=None)
def converted(case: str) -> bytes:
    """Convert one tiny Keras model with the TFLite converter (full int8 unless the case says not)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tf_keras as keras

    layers = keras.layers
    tf.random.set_seed(0)
    shape, batch, mode, io = (8, 8, 3), 1, "int8", tf.uint8

    def body(x):
        if case == "plain":
            return layers.Conv2D(4, 3, padding="same", activation="relu")(x)
        if case == "leaky_middle":
            return layers.Conv2D(4, 1)(layers.LeakyReLU(0.1)(layers.Conv2D(4, 1)(x)))
        if case in ("exp_middle", "gelu_middle"):
            fn = tf.math.exp if case == "exp_middle" else tf.nn.gelu
            return layers.Conv2D(4, 1)(fn(layers.Conv2D(4, 1)(x)))
        if case == "dilated":
            return layers.Conv2D(4, 3, dilation_rate=(2, 1), padding="same")(x)
        if case == "float":
            return layers.Conv2D(4, 3)(x)
        if case == "strided":
            return layers.Conv2D(4, 1)(x)[:, ::2, ::2, :]
        if case == "mnist":
            x = layers.MaxPooling2D()(layers.Conv2D(4, 3, activation="relu")(x))
            x = layers.MaxPooling2D()(layers.Conv2D(8, 3, activation="relu")(x))
            x = layers.Dense(16, activation="relu")(layers.Flatten()(x))
            return layers.Softmax()(layers.Dense(10)(x))
        raise KeyError(case)

    if case == "mnist":
        shape, io = (28, 28, 1), None
    if case == "float":
        mode = "float"
    inp = keras.Input(shape, batch_size=batch)
    model = keras.Model(inp, body(inp))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "int8":
        rng = np.random.default_rng(0)

        def representative():
            for _ in range(4):
                yield [rng.uniform(-1, 1, size=(batch, *shape)).astype(np.float32)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io is not None:
            converter.inference_input_type = io
            converter.inference_output_type = io
    return converter.convert()


def _names(report):
    return [(v.name, v.version, v.on_edgetpu, v.status) for v in report.ops]


@pytest.mark.slow
def test_tf_plain_int8_model_maps_fully_with_exact_parameter_bytes():
    report = inspect_tflite(converted("plain"))
    assert _names(report) == [("QUANTIZE", 1, True, rules.STATUS_MAPPED),
                              ("CONV_2D", 3, True, rules.STATUS_MAPPED),
                              ("QUANTIZE", 1, True, rules.STATUS_MAPPED)]
    # 4 filters of 3x3x3 int8 weights + 4 int32 biases
    assert report.parameter_bytes == 4 * 3 * 3 * 3 * 1 + 4 * 4
    weights_q = report.ops[1].inputs[1].quantization
    assert weights_q.per_channel and len(weights_q.scale) == 4 and weights_q.axis == 0


@pytest.mark.slow
def test_tf_exported_ssd_counts_no_postprocess_anchors():
    """The export's own detection model: the anchors of TFLite_Detection_PostProcess (float, CPU) are in the
    file but not among the Edge TPU parameters; every constant an Edge TPU op reads is."""
    from export_helpers import TinyConfig, random_images, tiny_anchors, tiny_ssd

    from edge_trash.export.detection_tflite import convert_to_int8_detection_tflite, postprocess_params_from_config

    config = TinyConfig()
    data = convert_to_int8_detection_tflite(tiny_ssd(config.num_classes), tiny_anchors(),
                                            postprocess_params_from_config(config), lambda: random_images(8))
    model, report = read_tflite(data), inspect_tflite(data)
    assert report.cpu_op_names() == ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    anchors = [t for t in model.ops[-1].inputs if t is not None and t.constant]
    assert [t.data_bytes for t in anchors] == [tiny_anchors().nbytes] == [160 * 4 * 4]
    assert report.parameter_bytes == model.parameter_bytes - tiny_anchors().nbytes
    tpu_constants = {t.buffer_index for v in report.ops if v.on_edgetpu
                     for t in v.inputs if t is not None and t.constant}
    assert len(tpu_constants) > 10 and anchors[0].buffer_index not in tpu_constants


@pytest.mark.slow
def test_tf_non_edgetpu_op_in_the_middle_cuts_the_rest():
    report = inspect_tflite(converted("leaky_middle"))
    assert _names(report) == [
        ("QUANTIZE", 1, True, rules.STATUS_MAPPED), ("CONV_2D", 3, True, rules.STATUS_MAPPED),
        ("LEAKY_RELU", 1, False, rules.STATUS_NOT_SUPPORTED), ("CONV_2D", 3, False, rules.STATUS_AFTER_CUT),
        ("QUANTIZE", 1, False, rules.STATUS_AFTER_CUT)]


@pytest.mark.slow
def test_tf_quantized_exp_is_version_2_which_the_compiler_cannot_parse():
    report = inspect_tflite(converted("exp_middle"))
    assert not report.compiler_can_parse
    assert report.compiler_error == "Didn't find op for builtin opcode 'EXP' version '2'"
    assert [v.on_edgetpu for v in report.ops] == [False] * 5
    assert report.ops[2].reason.startswith("EXP version 2 is above 1")
    assert report.ops[0].reason == "the compiler cannot parse this file (EXP version 2)"


@pytest.mark.slow
def test_tf_gelu_uses_the_extended_builtin_code():
    import tflite

    data = converted("gelu_middle")
    codes = tflite.Model.GetRootAs(data, 0)
    raw = [(codes.OperatorCodes(i).DeprecatedBuiltinCode(), codes.OperatorCodes(i).BuiltinCode())
           for i in range(codes.OperatorCodesLength())]
    assert (127, 150) in raw  # deprecated field holds the placeholder; the real code is the max
    report = inspect_tflite(data)
    assert report.ops[2].name == "GELU"
    assert report.compiler_error == f"Didn't find op for builtin opcode 'GELU' version '{report.ops[2].version}'"


@pytest.mark.slow
def test_tf_dilation_differing_in_x_and_y():
    report = inspect_tflite(converted("dilated"))
    assert _names(report) == [("QUANTIZE", 1, True, rules.STATUS_MAPPED),
                              ("CONV_2D", 3, False, rules.STATUS_LIMITATION),
                              ("QUANTIZE", 1, False, rules.STATUS_AFTER_CUT)]
    assert report.ops[1].reason == "CONV_2D dilation differs in y and x (2 vs 1)"


@pytest.mark.slow
def test_tf_strided_slice_with_stride_2():
    report = inspect_tflite(converted("strided"))
    assert report.cut_op.name == "STRIDED_SLICE"
    assert report.cut_op.reason == "STRIDED_SLICE strides are [1, 2, 2, 1]; all must be 1"


@pytest.mark.slow
def test_tf_float_model_is_not_quantized():
    report = inspect_tflite(converted("float"))
    assert report.compiler_error == "Model not quantized" and report.edgetpu_ops == 0
    assert report.parameter_bytes == 0  # nothing reaches the Edge TPU, so no parameter line
    assert summary_line(report) == "<bytes>: the compiler would fail: Model not quantized"


@needs_shared
@pytest.mark.slow
def test_tf_float_io_mnist_agrees_with_the_real_compiler_log():
    """The same layers as the mnist4 model in a real compiler 15 log: float input QUANTIZE on the CPU
    without a cut, everything else mapped, DEQUANTIZE on the CPU."""
    from edge_trash.export.compiler import compare_with_prediction
    from edge_trash.export.compiler_log import parse_compiler_output

    report = inspect_tflite(converted("mnist"))
    text = (LOGS / "v15_mnist_logs.txt").read_text()
    mnist4 = parse_compiler_output("", text[:text.index("Edge TPU Compiler version", 1)])
    assert compare_with_prediction(report, mnist4) == []
    assert Counter(v.status for v in report.ops) == Counter(
        {rules.STATUS_MAPPED: 8, rules.STATUS_LIMITATION: 1, rules.STATUS_DTYPE: 1})


# ---- the CLI -----------------------------------------------------------------------------------

@needs_shared
def test_cli_json_and_table():
    from edge_trash.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(SSD_SEGMENT), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert (doc["compiled"], doc["edgetpu_ops"], doc["cpu_ops"]) == (True, 1, 3)
    assert [o["name"] for o in doc["ops"]] == ["edgetpu-custom-op", "DEQUANTIZE", "DEQUANTIZE",
                                               "TFLite_Detection_PostProcess"]
    result = runner.invoke(cli, ["inspect", str(MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite")])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[-2].startswith("deeplabv3_mnv2_dm05_pascal_quant.tflite: 64 of 72 ops on the Edge TPU, "
                                "8 on the CPU; CPU from op 64 RESIZE_BILINEAR")
    model = MODELS / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
    assert lines[-1] == (
        f"next: edgetpu_compiler --out_dir {shlex.quote(str(MODELS))} --show_operations {shlex.quote(str(model))} "
        "on an x86-64 Linux machine; to move op 64 RESIZE_BILINEAR and the 7 ops after it onto the Edge TPU: change "
        "or replace RESIZE_BILINEAR so it meets the Edge TPU's limits (the reason above; the supported ops and their "
        "limits: https://coral.ai/docs/edgetpu/models-intro/)")
    result = runner.invoke(cli, ["inspect", str(MODELS / "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite")])
    assert result.output.splitlines()[-1] == ("next: nothing to compile; it runs with the Edge TPU delegate "
                                              "(libedgetpu.so.1) where a TPU is present")
    assert any(line.split()[:5] == ["64", "RESIZE_BILINEAR", "1", "CPU", "RESIZE_BILINEAR"] for line in lines)


def test_cli_rejects_a_file_that_is_not_tflite(tmp_path):
    from edge_trash.cli import cli

    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"PK\x03\x04 a zip, not a flatbuffer")
    result = CliRunner().invoke(cli, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert "Invalid value for MODEL" in result.output
    assert "expected the flatbuffer identifier 'TFL3'" in result.output
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "absent.tflite")])
    assert result.exit_code == 2 and "does not exist" in result.output


@needs_shared
def test_cli_subprocess_json_without_tensorflow():
    exe = Path(sys.executable).parent / "edge-trash"
    command = [str(exe)] if exe.is_file() else [sys.executable, "-m", "edge_trash"]
    model = MODELS / "mobilenet_v1_0.25_128_quant.tflite"
    proc = subprocess.run([*command, "inspect", str(model), "--json"], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["edgetpu_ops"], doc["cpu_ops"], doc["first_cpu_op"]) == (31, 0, None)

    probe = (
        "import sys\n"
        "from edge_trash.cli import main\n"
        f"sys.argv = ['edge-trash', 'inspect', {str(model)!r}, '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "assert 'edge_trash.export.compat' in sys.modules\n"
        "assert 'tensorflow' not in sys.modules, 'inspect imported TensorFlow'\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr


@needs_shared
def test_cli_takes_a_bundle_folder_and_prefers_its_compiled_model(tmp_path, monkeypatch):
    from edge_trash.cli import cli

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model_int8.tflite").write_bytes((MODELS / "mobilenet_v1_0.25_128_quant.tflite").read_bytes())
    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(bundle)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2].startswith("model_int8.tflite: 31 of 31 ops on the Edge TPU")
    (bundle / "manifest.json").write_text("{}")  # an exported bundle: compile into it, then let export record it
    # the export refuses --compiler without --edgetpu, and compiles again anyway: the step says --edgetpu
    assert runner.invoke(cli, ["inspect", str(bundle)]).output.splitlines()[-1] == (
        "next: on an x86-64 Linux machine with edgetpu_compiler, rerun the export with --edgetpu (and --compiler "
        "PATH where it is not on PATH): it compiles the model and lists it in the bundle's manifest")
    (bundle / "model_int8_edgetpu.tflite").write_bytes(SSD_SEGMENT.read_bytes())
    assert runner.invoke(cli, ["inspect", str(bundle)]).output.splitlines()[-1] == (
        f"next: {bundle}/manifest.json does not list model_int8_edgetpu.tflite, so the service cannot check it: rerun "
        "the export with --edgetpu --compiler PATH where edgetpu_compiler is installed, then copy the bundle to the "
        "board")  # compiled by hand after the export
    (bundle / "manifest.json").write_text(json.dumps({"files": {"model_int8_edgetpu.tflite": {"sha256": "0" * 64,
                                                                                           "size": 1}}}))
    push = (f"next: copy the bundle to the board: mdt push {shlex.quote(str(bundle))} /home/mendel/  (or scp -r "
            f"{shlex.quote(str(bundle))} mendel@BOARD:)")
    assert runner.invoke(cli, ["inspect", str(bundle)]).output.splitlines()[-1] == push
    monkeypatch.chdir(bundle)  # `inspect .` in the bundle: the push names the folder, not "." (scp -r . copies its files)
    assert runner.invoke(cli, ["inspect", "."]).output.splitlines()[-1] == push
    monkeypatch.chdir(tmp_path)
    (bundle / "manifest.json").unlink()
    result = runner.invoke(cli, ["inspect", str(bundle), "--json"])
    assert (json.loads(result.output)["compiled"], json.loads(result.output)["cpu_ops"]) == (True, 3)
    (bundle / "model_int8.tflite").rename(bundle / "a.tflite")
    (bundle / "model_int8_edgetpu.tflite").rename(bundle / "b.tflite")
    result = runner.invoke(cli, ["inspect", str(bundle)])
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == (f"Error: Invalid value for MODEL: {bundle} holds several models "
                                              "(a.tflite, b.tflite): name one")
    result = runner.invoke(cli, ["inspect", str(tmp_path)])
    assert result.output.splitlines()[-1] == f"Error: Invalid value for MODEL: {tmp_path} holds no .tflite file"


@needs_shared
def test_one_segment_of_a_pipelined_model_is_named_as_one(tmp_path):
    """inspect said "nothing to compile; it runs with the Edge TPU delegate" of a segment fed by another one."""
    from edge_trash.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["inspect", str(SSD_SEGMENT)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "next: this is segment 1 (from 0) of 2 of a model compiled with --num_segments 2; its inputs are segment 0's "
        "outputs, not an image: run all 2 together with pycoral's PipelinedModelRunner, one Edge TPU each (the "
        "edge-trash service runs one whole model: its export compiles without segments)")
    folder = tmp_path / "pipelined"
    folder.mkdir()
    for k in (0, 1):  # a folder of both segments is one model, not "several models"
        (folder / f"ssd_segment_{k}_of_2_edgetpu.tflite").write_bytes(SSD_SEGMENT.read_bytes())
    result = runner.invoke(cli, ["inspect", str(folder)])
    assert result.exit_code == 2
    assert (f"{folder} holds 2 segments of one pipelined model (ssd_segment_0_of_2_edgetpu.tflite, "
            "ssd_segment_1_of_2_edgetpu.tflite), which run together, one Edge TPU each: name one to inspect it"
            ) in " ".join(result.output.split())


def test_int16_activations_and_a_dynamic_batch_get_their_own_fix():
    """16x8 quantization was told to "check TFLITE_BUILTINS_INT8" as for a float tensor; a Reshape of a model
    with a dynamic batch (a SHAPE op) got the generic "change or replace SHAPE"."""
    import tensorflow as tf

    from edge_trash.export.compat import inspect_tflite
    from edge_trash.export.edgetpu_gate import INT16_FIX, blocker

    inputs = tf.keras.Input((16, 16, 3))  # batch not fixed
    outputs = tf.keras.layers.Reshape((-1, 4))(tf.keras.layers.Conv2D(4, 3, padding="same")(inputs))
    model = tf.keras.Model(inputs, outputs)

    def convert(ops):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.random.default_rng(k).uniform(0, 1, (1, 16, 16, 3))
                                                     .astype(np.float32)] for k in range(4))
        converter.target_spec.supported_ops = [ops]
        return converter.convert()

    op, _, fix = blocker(inspect_tflite(convert(tf.lite.OpsSet.TFLITE_BUILTINS_INT8)), float_input_ok=True)
    assert op.name == "SHAPE" and fix.startswith("convert with a fixed batch of 1 (an Input with batch_size=1")
    op, _, fix = blocker(inspect_tflite(convert(
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8)), float_input_ok=True)
    assert fix == INT16_FIX and "16x8" in fix
