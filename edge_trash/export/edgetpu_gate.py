"""The export's Edge TPU gate: is the int8 detector predicted to compile into Coral's SSD shape?

The expected shape after compilation is ONE ``edgetpu-custom-op`` followed only by DEQUANTIZE
op(s) and TFLite_Detection_PostProcess on the CPU. This module applies that rule to the
compatibility prediction of ``edge_trash.export.compat.inspect_tflite`` and, when a compiler is
available, drives ``edge_trash.export.compiler`` and compares its split with the prediction.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional, Sequence, Tuple

from edge_trash.export.detection_tflite import POSTPROCESS_OP_NAME

#: Ops allowed on the CPU, and only at the very end of the graph.
ALLOWED_CPU_TAIL = frozenset({"DEQUANTIZE", POSTPROCESS_OP_NAME})

# How to fix an op that blocks the Edge TPU, by op name (the model or the export must change).
_FIXES: Dict[str, str] = {
    "TILE": "build upsampling from Keras UpSampling2D/Resize layers, not tf.tile",
    "HARD_SWISH": "use ReLU6 activations (MobileNetV2), not hard-swish (MobileNetV3/EdgeTPU-unfriendly)",
    "LEAKY_RELU": "use ReLU/ReLU6 or PReLU with shared_axes=[1,2]",
    "EXP": "keep box decoding out of the model: TFLite_Detection_PostProcess decodes boxes on the CPU",
    "GATHER": "keep anchor/box selection out of the model: the postprocess op does it on the CPU",
    "CAST": "keep the graph int8 end to end; do not cast inside the model",
    "DIV": "multiply by a constant reciprocal instead of dividing",
    "QUANTIZE": "re-export with TensorFlow's full-integer quantization (per-tensor activations)",
    # a Reshape([-1, 4]) of a model whose batch is not fixed reads the input's shape at run time
    "SHAPE": "convert with a fixed batch of 1 (an Input with batch_size=1, or a concrete function of shape "
             "[1, H, W, 3]): a dynamic batch makes Reshape compute its shape from the input at run time",
}
INT16_FIX = ("int16 activations (16x8 quantization) do not map: convert with plain int8 (supported_ops "
             "TFLITE_BUILTINS_INT8, not EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8)")


@dataclasses.dataclass
class GateResult:
    """The verdict on one model: ``ok``, the one-line ``message`` (blocking op and fix), the report."""

    ok: bool
    message: str
    report: Dict[str, Any]  # compat.json: CompatReport.to_json_dict() plus the verdict
    summary: Dict[str, Any]  # the short form for the manifest


def fix_for(name: str, reason: str, op: Any = None) -> str:
    """How to change the model so op ``name``, on the CPU for ``reason``, maps to the Edge TPU (``op``, its
    verdict, tells int16 activations from a float tensor)."""
    tensors = [t for t in (list(op.inputs) + list(op.outputs) if op is not None else []) if t is not None]
    if any(t.dtype == "int16" for t in tensors):
        return INT16_FIX
    if "version" in reason.lower():
        return (f"the Edge TPU compiler 16 parses TFLite at TensorFlow 2.5 level; {name} must come out "
                "at a lower op version: use plain full-int8 post-training quantization (no per-channel "
                "QUANTIZE, no int16 activations, no grouped convolutions)")
    if "float" in reason.lower() or "not quantized" in reason.lower():
        return ("a float tensor inside the graph means the op was not quantized: every op before the "
                "postprocess must be int8 (check the representative dataset and TFLITE_BUILTINS_INT8)")
    return _FIXES.get(name, f"change or replace {name} so it meets the Edge TPU's limits (the reason above; the "
                            "supported ops and their limits: https://coral.ai/docs/edgetpu/models-intro/)")


def _blocking_message(op: Any, reason: str, fix: str) -> str:
    return (f"op {op.index} {op.name} (version {op.version}) blocks the Edge TPU: {reason}; "
            f"fix: {fix}. Expected one Edge TPU subgraph followed only by "
            f"DEQUANTIZE + {POSTPROCESS_OP_NAME} on the CPU; --allow-cpu-ops turns this into a warning")


def blocker(report: Any, float_input_ok: bool = False) -> Optional[Tuple[Optional[Any], str, str]]:
    """``(op, reason, fix)`` for what keeps a ``CompatReport`` from the SSD shape (one Edge TPU subgraph, then
    only ``ALLOWED_CPU_TAIL``), or None when it has that shape. ``op`` is None when the compiler would fail
    without naming an op (``reason`` is then its error). ``float_input_ok``: a QUANTIZE of a float model input in
    front of the subgraph (no cut) is no blocker, as for any ``.tflite`` (the export's must take uint8)."""
    cpu_ops = [op for op in report.ops if not op.on_edgetpu and not (
        float_input_ok and op.name == "QUANTIZE" and (report.cut_index is None or op.index < report.cut_index))]
    if not report.compiler_can_parse or report.compiler_error:
        cause = report.cut_op or (cpu_ops[0] if cpu_ops else None)
        if cause is None:
            return None, f"the Edge TPU compiler would fail: {report.compiler_error}", ""
        reason = cause.reason or str(report.compiler_error)
        return cause, reason, fix_for(cause.name, reason, cause)
    stray = next((op for op in cpu_ops if op.name not in ALLOWED_CPU_TAIL), None)
    if stray is None:
        return None
    cut = report.cut_op
    if cut is not None and cut.name in ALLOWED_CPU_TAIL and cut.index < stray.index:
        # A DEQUANTIZE in the middle cuts the graph: the ops after it fall to the CPU.
        return cut, (f"it comes before {stray.name} (op {stray.index}) in execution order, so the single cut "
                     "leaves the rest of the graph on the CPU"), \
            "dequantize only the final model outputs (defer_cpu_tail reorders them last)"
    return stray, stray.reason, fix_for(stray.name, stray.reason, stray)


def judge(report: Any) -> GateResult:
    """Apply the SSD-shape rule to a ``CompatReport``."""
    from edge_trash.export.compat import summary_line

    data = report.to_json_dict(per_channel_values=False)  # compat.json: the model file has every scale
    found = blocker(report)
    message = ""
    if found is not None:
        op, reason, fix = found
        message = reason if op is None else _blocking_message(op, reason, fix)
    ok = not message
    data["gate"] = {"ok": ok, "message": message, "allowed_cpu_tail": sorted(ALLOWED_CPU_TAIL),
                    "summary": summary_line(report)}
    summary = {"ok": ok, "edgetpu_ops": report.edgetpu_ops, "cpu_ops": report.cpu_ops,
               "cpu_op_names": report.cpu_op_names(), "compiler_can_parse": report.compiler_can_parse,
               "parameter_bytes": report.parameter_bytes, "fits_parameter_cache": report.fits_parameter_cache,
               "message": message}
    return GateResult(ok=ok, message=message, report=data, summary=summary)


def check(tflite_model: bytes, name: str = "") -> GateResult:
    """Inspect a converted model and judge it (see :func:`judge`); ``name`` is the file the bytes go to (the
    report's ``source`` and its summary line name it, not ``<bytes>``)."""
    from edge_trash.export.compat import inspect_tflite

    report = inspect_tflite(tflite_model)
    if name:
        report.source = name
    return judge(report)


def compile_model(cpu_model_path: str, out_dir: str, compiler: Optional[str],
                  final_dir: Optional[str] = None, failed_dir: Optional[str] = None,
                  timeout_s: int = 180) -> Dict[str, Any]:
    """Compile with edgetpu_compiler (``compiler`` path or PATH) into ``out_dir``, with the compiler's own
    ``--timeout_sec`` ``timeout_s``.

    ``final_dir`` is where ``out_dir`` will end up (the bundle is built in a staging directory), and
    ``failed_dir`` where it ends up when the compile fails (default ``final_dir``: an export that keeps a
    working bundle puts a failed one's files beside it): messages name paths there, so the commands they
    suggest work after the export (and never touch the kept bundle).

    Returns a dict with ``status`` 'ok' | 'not_found' | 'failed' | 'incompatible' (it compiled, but the compiled
    file is not one Edge TPU subgraph followed only by the allowed CPU tail: what runs is the compiler's word, not
    the prediction's), ``message`` (for 'not_found': how to compile and which file), ``disagreements``
    (compiler split vs prediction) and the parsed compiler summary.
    """
    from edge_trash.export import compiler as driver
    from edge_trash.export.compat import inspect_tflite
    from edge_trash.export.tflite_model import TfliteFormatError

    found = driver.find_compiler(compiler)
    if found is None:
        where = f"{compiler!r} is not an executable file or command. " if compiler else ""
        shown_dir = final_dir or out_dir
        shown_model = os.path.join(shown_dir, os.path.basename(cpu_model_path))
        return {"status": "not_found", "disagreements": [],
                "message": where + driver.compile_instructions(shown_model, shown_dir)}
    outcome = driver.run_compiler(found, cpu_model_path, out_dir, timeout_s=timeout_s)
    result = outcome.result
    info: Dict[str, Any] = {
        "status": "ok" if outcome.ok else "failed", "compiler": found,
        "compiler_version": result.compiler_version, "duration_s": round(outcome.duration_s, 2),
        "edgetpu_subgraphs": result.edgetpu_subgraphs, "edgetpu_ops": result.edgetpu_ops,
        "cpu_ops": result.cpu_ops, "on_chip_used_bytes": result.on_chip_used_bytes,
        "off_chip_streaming_bytes": result.off_chip_streaming_bytes,
        "errors": [dataclasses.asdict(e) for e in result.errors], "disagreements": [], "message": ""}
    if not outcome.ok:
        details = ("; ".join(e.message for e in result.errors) or (outcome.stderr or outcome.stdout).strip()[-500:]
                   or f"it printed nothing, exited {outcome.returncode} and wrote no compiled model")
        version = next((e for e in result.errors if e.kind == "op_version" and e.op_name), None)
        if version is not None:  # the compiler names the op it cannot parse, not what to do about it
            details += f"; fix: {fix_for(version.op_name, 'version')}"
        command = " ".join(outcome.command)
        if failed_dir or final_dir:
            command = command.replace(out_dir, failed_dir or final_dir)
        info["message"] = (f"{os.path.basename(found)} failed on {os.path.basename(cpu_model_path)}: "
                           f"{details}. Command: {command}")
        return info
    info["disagreements"] = list(driver.compare_with_prediction(inspect_tflite(cpu_model_path), result))
    try:
        compiled = inspect_tflite(str(outcome.compiled_model))
    except TfliteFormatError as exc:  # it said "succeeded" and wrote a file no interpreter could load
        info["status"] = "failed"
        info["message"] = (f"{os.path.basename(found)} reported success on {os.path.basename(cpu_model_path)} but "
                           f"wrote an unreadable {os.path.basename(str(outcome.compiled_model))} "
                           f"({str(exc).replace(out_dir, failed_dir or final_dir or out_dir)}): a disk "
                           "that filled while it wrote, or a damaged compiler install; free space and run the export "
                           "again")
        return info
    # what the compiled file holds is what will run: a file without edgetpu-custom-op runs wholly on the CPU
    custom_ops = compiled.edgetpu_ops if compiled.compiled else 0
    on_cpu = [op.name for op in compiled.ops if not (compiled.compiled and op.on_edgetpu)]
    info["compiled_cpu_ops"] = on_cpu
    first_tpu = next((op.index for op in compiled.ops if compiled.compiled and op.on_edgetpu), None)
    before = [op.name for op in compiled.ops[:first_tpu]] if first_tpu is not None else []
    problem = compiled_shape_problem(custom_ops, on_cpu, result.edgetpu_subgraphs, before)
    if problem:
        info["status"] = "incompatible"
        info["message"] = (f"{os.path.basename(found)} compiled {os.path.basename(cpu_model_path)}, but {problem} "
                           f"(compiler: {result.edgetpu_ops} Edge TPU ops, {result.cpu_ops} CPU ops; see "
                           f"{os.path.basename(str(outcome.compiled_model))[:-len('.tflite')]}.log)")
    return info


def compiled_shape_problem(custom_ops: int, cpu_ops: list, subgraphs: Optional[int], before: Sequence[str] = ()) -> str:
    """Why a compiled model is not one Edge TPU subgraph followed only by ``ALLOWED_CPU_TAIL`` on the CPU ("" when
    it is): ``custom_ops`` edgetpu-custom-ops in the file, the names of its ``cpu_ops`` (``before``: those of them
    in front of the first custom op), the compiler's ``subgraphs`` count (None when it printed none)."""
    from collections import Counter

    from edge_trash.terminal import plural

    stray = Counter(name for name in cpu_ops if name not in ALLOWED_CPU_TAIL)
    if custom_ops == 1 and not stray and subgraphs in (None, 1) and before:
        return (f"the compiled model runs {', '.join(before)} on the CPU before its edgetpu-custom-op: expected "
                f"the Edge TPU subgraph first, followed only by DEQUANTIZE and {POSTPROCESS_OP_NAME}")
    if custom_ops == 1 and not stray and subgraphs in (None, 1):
        return ""
    found = f"{custom_ops} edgetpu-custom-op" + ("" if subgraphs in (None, custom_ops) else
                                                 f" ({plural(subgraphs, 'Edge TPU subgraph')}, as the compiler says)")
    shown = ", ".join(f"{name} x{n}" if n > 1 else name for name, n in sorted(stray.items(), key=lambda kv: -kv[1])[:5])
    more = f" and {len(stray) - 5} more kinds" if len(stray) > 5 else ""
    rest = f"; {sum(stray.values())} other ops run on the CPU ({shown}{more})" if stray else ""
    return (f"the compiled model holds {found}{rest}: expected 1, followed only by DEQUANTIZE and "
            f"{POSTPROCESS_OP_NAME} on the CPU")
