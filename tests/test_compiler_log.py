"""The compiler output parser against every real compiler output in shared/edgetpu/compiler-logs/."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_trash.export.compiler_log import OpRow, parse_compiler_output, parse_size

LOGS = Path(__file__).resolve().parents[1].parent / "shared" / "edgetpu" / "compiler-logs"
KiB, MiB = 1024, 1024 * 1024

LIMITATION = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
DTYPE = "Operation is working on an unsupported data type"
MAPPED = "Mapped to Edge TPU"
AFTER_CUT = "More than one subgraph is not supported"

pytestmark = pytest.mark.skipif(not LOGS.is_dir(), reason=f"{LOGS} (shared compiler logs) not present")


def read(name: str) -> str:
    return (LOGS / name).read_text()


def test_every_fixture_has_a_test():
    tested = {"v14_internal_error.txt", "v14_not_quantized.txt", "v15_m11_zero_subgraphs.stdout.txt",
              "v15_mnist_logs.txt", "v16_custom_op_fail.txt", "v16_efficientdet.stdout.txt",
              "v16_efficientdet_partial.log", "v16_mostly_cpu.stdout.txt", "v16_parse_fail_exp_v2.txt",
              "v16_parse_fail_quantize_v3.txt", "v16_parse_fail_transpose_conv_v4.txt",
              "v16_timeout5_fail.txt", "v16_yolov5s_sa.stdout.txt", "v16_yolov9_table_fragment.txt"}
    present = {p.name for p in LOGS.iterdir() if p.name != "SOURCES.md"}
    assert present == tested


@pytest.mark.parametrize("text, expected", [
    ("7.37MiB", round(7.37 * MiB)), ("961.05KiB", round(961.05 * KiB)), ("0.00B", 0), ("18.00KiB", 18432),
    ("12B", 12)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_parse_size_rejects_unknown_unit():
    with pytest.raises(ValueError, match="expected a number followed by B, KiB or MiB"):
        parse_size("3 MB")


def test_v16_yolov5s_with_op_table_on_stdout():
    r = parse_compiler_output(read("v16_yolov5s_sa.stdout.txt"))
    assert r.compiler_version == "16.0.384591198"
    assert r.success is True
    assert r.compile_time_ms == 3173
    assert r.timeout_s == 180
    assert (r.input_model, r.output_model) == ("yolov5s-int8-224.tflite", "yolov5s-int8-224_edgetpu.tflite")
    assert r.input_size_bytes == round(7.37 * MiB)
    assert r.output_size_bytes == round(8.34 * MiB)
    assert r.on_chip_used_bytes == round(6.08 * MiB)
    assert r.on_chip_remaining_bytes == 0
    assert r.off_chip_streaming_bytes == round(1.70 * MiB)
    assert (r.edgetpu_subgraphs, r.total_ops, r.edgetpu_ops, r.cpu_ops) == (2, 294, 289, 5)
    assert r.operation_log == "yolov5s-int8-224_edgetpu.log"
    assert len(r.op_rows) == 17
    assert r.op_rows[0] == OpRow("RESIZE_NEAREST_NEIGHBOR", 2, MAPPED)
    assert r.op_rows[1] == OpRow("CONCATENATION", 1, LIMITATION)
    assert r.op_rows[-1] == OpRow("CONV_2D", 62, MAPPED)
    assert sum(row.count for row in r.op_rows) == 294
    assert sum(row.count for row in r.op_rows if not row.mapped) == 5
    counts = r.op_counts()
    assert counts[("QUANTIZE", True)] == 24 and counts[("QUANTIZE", False)] == 2
    assert r.errors == []


def test_v16_mostly_cpu():
    r = parse_compiler_output(read("v16_mostly_cpu.stdout.txt"))
    assert r.success is True and r.compile_time_ms == 141
    assert (r.input_model, r.output_model) == ("1.tflite", "1_edgetpu.tflite")
    assert r.input_size_bytes == round(5.11 * MiB) and r.output_size_bytes == round(5.09 * MiB)
    assert r.on_chip_used_bytes == 18 * KiB
    assert r.on_chip_remaining_bytes == round(6.86 * MiB)
    assert r.off_chip_streaming_bytes == 0
    assert (r.edgetpu_subgraphs, r.total_ops, r.edgetpu_ops, r.cpu_ops) == (1, 368, 15, 353)
    assert r.op_rows == [] and r.errors == []


def test_v16_efficientdet_stdout_and_partial_log():
    r = parse_compiler_output(read("v16_efficientdet.stdout.txt"), read("v16_efficientdet_partial.log"))
    assert r.success is True and r.compile_time_ms == 1524
    assert r.input_size_bytes == round(4.24 * MiB) and r.output_size_bytes == round(5.57 * MiB)
    assert r.on_chip_used_bytes == round(4.21 * MiB)
    assert r.on_chip_remaining_bytes == round(3.29 * MiB)
    assert r.off_chip_streaming_bytes == 0
    assert (r.edgetpu_subgraphs, r.total_ops, r.edgetpu_ops, r.cpu_ops) == (1, 267, 264, 3)
    assert r.op_rows == [
        OpRow("ADD", 42, MAPPED), OpRow("CUSTOM", 1, DTYPE), OpRow("RESHAPE", 10, MAPPED),
        OpRow("CONCATENATION", 2, MAPPED), OpRow("RESIZE_NEAREST_NEIGHBOR", 12, MAPPED),
        OpRow("DEPTHWISE_CONV_2D", 80, MAPPED), OpRow("DEQUANTIZE", 2, DTYPE), OpRow("CONV_2D", 102, MAPPED)]


def test_v16_efficientdet_log_alone():
    r = parse_compiler_output("", read("v16_efficientdet_partial.log"))
    assert r.compiler_version == "16.0.384591198"
    assert (r.input_model, r.output_model) == ("efficientdet_coral_v2.tflite",
                                               "efficientdet_coral_v2_edgetpu.tflite")
    assert r.success is True  # a .log is only written by a compilation that went through
    assert len(r.op_rows) == 8 and r.edgetpu_ops is None


def test_v16_yolov9_fragment_statuses():
    r = parse_compiler_output(read("v16_yolov9_table_fragment.txt"))
    assert r.success is True and r.compiler_version is None
    assert (r.edgetpu_ops, r.cpu_ops) == (719, 31)
    assert len(r.op_rows) == 25
    assert OpRow("GATHER", 6, "Operation not supported") in r.op_rows
    assert OpRow("TRANSPOSE", 1, AFTER_CUT) in r.op_rows
    assert sum(row.count for row in r.op_rows if not row.mapped) == 31
    assert sum(row.count for row in r.op_rows if row.mapped) == 719


@pytest.mark.parametrize("name, op, version, model", [
    ("v16_parse_fail_exp_v2.txt", "EXP", 2, "model_2.tflite"),
    ("v16_parse_fail_quantize_v3.txt", "QUANTIZE", 3, "/mnt/e/models/quantized_model.tflite"),
    ("v16_parse_fail_transpose_conv_v4.txt", "TRANSPOSE_CONV", 4, "model_full_integer_quant.tflite"),
])
def test_v16_parse_failures(name, op, version, model):
    r = parse_compiler_output(read(name))
    assert r.compiler_version == "16.0.384591198"
    assert r.success is False and r.parse_failed is True
    assert [e.kind for e in r.errors] == ["op_version", "not_parsed"]
    assert (r.errors[0].op_name, r.errors[0].op_version) == (op, version)
    assert r.errors[0].message.startswith(f"Didn't find op for builtin opcode '{op}' version '{version}'")
    assert r.input_model == model
    assert r.total_ops is None and r.op_rows == []


def test_v16_unresolved_custom_op():
    r = parse_compiler_output(read("v16_custom_op_fail.txt"))
    assert r.success is False and r.parse_failed is False and r.timeout_s == 180
    assert [e.kind for e in r.errors] == ["unresolved_custom_op", "node_prepare", "failed"]
    assert r.errors[0].op_name == "Atan" and r.errors[1].op_name == "Atan"
    assert r.errors[2].message.startswith("Compilation failed: Model failed in Tflite interpreter")


def test_v16_timeout():
    r = parse_compiler_output(read("v16_timeout5_fail.txt"))
    assert r.success is False and r.timeout_s == 5
    assert [e.kind for e in r.errors] == ["timeout"]
    assert "5 s timeout" in r.errors[0].message


def test_v15_zero_subgraphs_truncated():
    r = parse_compiler_output(read("v15_m11_zero_subgraphs.stdout.txt"))
    assert r.compiler_version == "15.0.340273435"
    assert r.success is True and r.compile_time_ms == 17
    assert r.input_size_bytes == round(961.05 * KiB) and r.output_size_bytes == round(882.13 * KiB)
    assert (r.on_chip_used_bytes, r.on_chip_remaining_bytes, r.off_chip_streaming_bytes) == (0, 0, 0)
    assert (r.edgetpu_subgraphs, r.total_ops, r.edgetpu_ops, r.cpu_ops) == (0, 69, 0, None)
    assert r.timeout_s is None


def test_v15_two_log_files():
    text = read("v15_mnist_logs.txt")
    second = text.index("Edge TPU Compiler version", 1)
    mnist4 = parse_compiler_output("", text[:second])
    mnist7 = parse_compiler_output("", text[second:])
    assert (mnist4.input_model, mnist4.output_model) == ("mnist4.tflite", "mnist4_edgetpu.tflite")
    assert mnist4.op_rows == [
        OpRow("RESHAPE", 1, MAPPED), OpRow("CONV_2D", 2, MAPPED), OpRow("SOFTMAX", 1, MAPPED),
        OpRow("QUANTIZE", 1, LIMITATION), OpRow("DEQUANTIZE", 1, DTYPE), OpRow("MAX_POOL_2D", 2, MAPPED),
        OpRow("FULLY_CONNECTED", 2, MAPPED)]
    assert mnist7.input_model == "mnist7.tflite"
    assert [(row.name, row.count, row.mapped) for row in mnist7.op_rows] == [
        ("SOFTMAX", 1, True), ("FULLY_CONNECTED", 2, True), ("RESHAPE", 1, True), ("CONV_2D", 2, True),
        ("MAX_POOL_2D", 2, True)]


def test_v14_internal_error():
    r = parse_compiler_output(read("v14_internal_error.txt"))
    assert r.compiler_version == "14.1.317412892" and r.success is False
    assert [(e.kind, e.message) for e in r.errors] == [("internal_error", "Internal compiler error. Aborting!")]


def test_v14_not_quantized():
    r = parse_compiler_output(read("v14_not_quantized.txt"))
    assert r.compiler_version == "14.1.317412892" and r.success is False
    assert [e.kind for e in r.errors] == ["not_quantized"]
    assert r.input_model == "my_mnist_quant.tflite"


def test_empty_output_is_not_success():
    r = parse_compiler_output("", None)
    assert r.success is False and r.compiler_version is None and r.op_rows == []
