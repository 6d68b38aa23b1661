"""Predict what the Edge TPU compiler 16 does with a ``.tflite`` file, op by op, without running it.

Model of the compiler (checked against Coral's compiled model pairs and real compiler logs):

* The file must parse: every builtin op at a version the compiler knows (TensorFlow 2.5 level),
  otherwise the whole compilation fails ("Didn't find op for builtin opcode ...").
* A model with no int8/uint8 quantized tensor at all fails with "Model not quantized".
* Each op maps unless it has an unsupported data type, is not an Edge TPU op, or breaks a limit.
* One cut: the first op that cannot map, and every op after it in execution order, run on the CPU.
  Ops after the cut that have their own problem report it (the compiler does the same); the others
  report "after the first CPU op (single subgraph)".
* A QUANTIZE of a float model input stays on the CPU in front of the Edge TPU subgraph without
  cutting the graph (compiler log of a float-input MNIST: QUANTIZE "otherwise supported, but not
  mapped", the CONV_2D / FULLY_CONNECTED / SOFTMAX after it "Mapped to Edge TPU").

``parameter_bytes`` counts the constant tensors (weights, biases, operands) read by the ops predicted
to run on the Edge TPU, each buffer once: what the compiler caches in on-chip memory. Constants that
only CPU ops read (the float anchors of TFLite_Detection_PostProcess, the weights of ops after the
cut) stay in host memory and are not counted; a constant read by an Edge TPU op and a CPU op counts
once. A model the compiler would refuse places nothing on the Edge TPU and counts 0.

An already compiled ``*_edgetpu.tflite`` is described as it is: ``edgetpu-custom-op`` counts as Edge
TPU, every other op runs on the CPU. Its Edge TPU parameters live inside the custom op's own data, not
in constant tensors, so its ``parameter_bytes`` is 0 (the compiler's log says what it cached). Only the
main subgraph (index 0) is read.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from edge_trash.export import edgetpu_ops as rules
from edge_trash.export.tflite_model import (EDGETPU_CUSTOM_OP, OpInfo, TensorInfo, TfliteModel,
                                            read_tflite)

_MIB = 1024 * 1024
# On-chip memory compiler 16 offered for caching parameters (used + remaining) in the real logs of
# ../shared/edgetpu/compiler-logs: 6.08 MiB (YOLOv5s, 1.70 MiB more streamed from the host), 6.88 MiB
# (mostly_cpu), 7.50 MiB (EfficientDet), of the chip's 8 MiB. It depends on the model and the compiler
# version; the check uses the smallest, so a model reported to fit fitted in every one of those runs.
PARAMETER_CACHE_BYTES = round(6.08 * _MIB)
PARAMETER_CACHE_MOST_SEEN_BYTES = round(7.50 * _MIB)  # the largest of those runs (for the message)
AFTER_CUT_REASON = "after the first CPU op (single subgraph)"
STATUS_NOT_PARSED = "Model could not be parsed"
STATUS_NOT_QUANTIZED = "Model not quantized"
STATUS_CPU_IN_COMPILED = "Runs on the CPU (outside edgetpu-custom-op)"


@dataclass
class OpVerdict:
    """Where one op runs and why."""

    index: int
    name: str
    version: int
    on_edgetpu: bool
    reason: str  # empty when the op maps
    status: str  # the compiler's status string for the op table
    table_name: str  # the compiler's op-table name (CUSTOM for custom ops)
    inputs: List[Optional[TensorInfo]] = field(default_factory=list, repr=False)
    outputs: List[TensorInfo] = field(default_factory=list, repr=False)

    def to_json_dict(self, per_channel_values: bool = True) -> Dict[str, Any]:
        """JSON-ready form (``per_channel_values``: see ``Quantization.to_json_dict``)."""
        return {"index": self.index, "name": self.name, "version": self.version,
                "on_edgetpu": self.on_edgetpu, "reason": self.reason, "status": self.status,
                "inputs": [t.to_json_dict(per_channel_values) if t else None for t in self.inputs],
                "outputs": [t.to_json_dict(per_channel_values) for t in self.outputs]}


@dataclass
class CompatReport:
    """The predicted compilation of one model."""

    source: str
    ops: List[OpVerdict]
    compiler_can_parse: bool
    compiled: bool
    parameter_bytes: int  # constant bytes of the ops predicted on the Edge TPU (see the module docstring)
    cut_index: Optional[int] = None  # the op where the single cut happens
    compiler_error: Optional[str] = None  # the failure the compiler would print, if any
    parameter_cache_bytes: int = PARAMETER_CACHE_BYTES

    @property
    def edgetpu_ops(self) -> int:
        """Number of ops predicted to run on the Edge TPU."""
        return sum(1 for op in self.ops if op.on_edgetpu)

    @property
    def cpu_ops(self) -> int:
        """Number of ops predicted to run on the CPU."""
        return len(self.ops) - self.edgetpu_ops

    @property
    def first_cpu_op(self) -> Optional[OpVerdict]:
        """The first op in execution order that runs on the CPU, or None when all map."""
        return next((op for op in self.ops if not op.on_edgetpu), None)

    @property
    def cut_op(self) -> Optional[OpVerdict]:
        """The op at which the single cut happens (a leading float-input QUANTIZE is not a cut)."""
        return self.ops[self.cut_index] if self.cut_index is not None else None

    @property
    def fits_parameter_cache(self) -> bool:
        """Whether the Edge TPU ops' constants fit the on-chip memory every logged compiler run offered
        (else some may stream from host memory every inference)."""
        return self.parameter_bytes <= self.parameter_cache_bytes

    def cpu_op_names(self) -> List[str]:
        """Names of the CPU ops in execution order."""
        return [op.name for op in self.ops if not op.on_edgetpu]

    def to_json_dict(self, per_channel_values: bool = True) -> Dict[str, Any]:
        """The ``edge-trash inspect --json`` document; a bundle's compat.json is it with
        ``per_channel_values=False`` (each per-channel quantization as its count and range)."""
        def brief(op: Optional[OpVerdict]) -> Optional[Dict[str, Any]]:
            return None if op is None else {"index": op.index, "name": op.name, "reason": op.reason}
        return {
            "ops": [op.to_json_dict(per_channel_values) for op in self.ops],
            "edgetpu_ops": self.edgetpu_ops,
            "cpu_ops": self.cpu_ops,
            "first_cpu_op": brief(self.first_cpu_op),
            "cut_op": brief(self.cut_op),
            "compiler_can_parse": self.compiler_can_parse,
            "compiler_error": self.compiler_error,
            "compiled": self.compiled,
            "parameter_bytes": self.parameter_bytes,
            "parameter_cache_bytes": self.parameter_cache_bytes,
            "fits_parameter_cache": self.fits_parameter_cache,
            "source": self.source,
        }


def inspect_tflite(path_or_bytes: Union[str, os.PathLike, bytes, bytearray, TfliteModel]) -> CompatReport:
    """Predict the Edge TPU compiler's op placement for a ``.tflite`` path, its bytes, or a read model.

    Raises ``TfliteFormatError`` (a ValueError naming the file) when the input is not a TFLite model.
    """
    model = path_or_bytes if isinstance(path_or_bytes, TfliteModel) else read_tflite(path_or_bytes)
    if any(op.custom_code == EDGETPU_CUSTOM_OP for op in model.ops):
        return _compiled_report(model)
    parse_problems = [(op, rules.version_problem(op)) for op in model.ops]
    parse_problems = [(op, p) for op, p in parse_problems if p]
    if parse_problems:
        return _unparsable_report(model, parse_problems)
    if not _has_quantized_tensor(model):
        return _uniform_report(model, STATUS_NOT_QUANTIZED, STATUS_NOT_QUANTIZED,
                               "the model has no quantized tensor: the compiler stops with "
                               "'Model not quantized'; convert with full-integer quantization")
    return _predict(model)


def _predict(model: TfliteModel) -> CompatReport:
    input_ids = set(model.input_indices)
    verdicts: List[OpVerdict] = []
    cut: Optional[int] = None
    for op in model.ops:
        if cut is None and _is_input_quantize(op, input_ids):
            verdicts.append(_verdict(op, False, rules.STATUS_LIMITATION,
                                     "QUANTIZE of the float model input stays on the CPU in front of "
                                     "the Edge TPU subgraph (does not cut the graph)"))
            continue
        status, reason = _own_problem(op)
        if status is None:
            if cut is None:
                verdicts.append(_verdict(op, True, rules.STATUS_MAPPED, ""))
            else:
                verdicts.append(_verdict(op, False, rules.STATUS_AFTER_CUT,
                                         f"{AFTER_CUT_REASON}: op {cut} {model.ops[cut].name}"))
            continue
        if cut is None:
            cut = op.index
        verdicts.append(_verdict(op, False, status, reason))
    return CompatReport(source=model.source, ops=verdicts, compiler_can_parse=True, compiled=False,
                        parameter_bytes=edgetpu_parameter_bytes(verdicts), cut_index=cut)


def edgetpu_parameter_bytes(verdicts: List[OpVerdict]) -> int:
    """Bytes of the constant tensors the Edge TPU ops among ``verdicts`` read, each buffer once.

    These are what the compiler caches on-chip; a constant only CPU ops read (the postprocess's
    float anchors) stays in host memory, and one shared with a CPU op still counts (once).
    """
    buffers = {t.buffer_index: t.data_bytes for v in verdicts if v.on_edgetpu
               for t in v.inputs if t is not None and t.constant}
    return sum(buffers.values())


def _own_problem(op: OpInfo) -> Tuple[Optional[str], str]:
    """(status, reason) for an op that cannot map on its own account, or (None, "")."""
    problem = rules.dtype_problem(op)
    if problem:
        return rules.STATUS_DTYPE, problem
    if op.is_custom:
        return rules.STATUS_NOT_SUPPORTED, f"custom op {op.name} runs on the CPU"
    if op.name not in rules.EDGETPU_OPS:
        return rules.STATUS_NOT_SUPPORTED, f"{op.name} is not an Edge TPU op"
    problem = rules.activation_rank_problem(op) or rules.limit_problem(op)
    if problem:
        return rules.STATUS_LIMITATION, problem
    return None, ""


def _is_input_quantize(op: OpInfo, input_ids: set) -> bool:
    source = op.inputs[0] if op.inputs else None
    return (op.name == "QUANTIZE" and source is not None and source.index in input_ids
            and source.dtype.startswith("float")
            and all(t.is_quantized_int8 for t in op.outputs))


def _has_quantized_tensor(model: TfliteModel) -> bool:
    # int16 (16x8 mode) counts as quantized: it parses, then fails per op with "unsupported data type".
    return any(t is not None and not t.constant and t.quantization is not None
               and t.dtype in ("int8", "uint8", "int16")
               for op in model.ops for t in (*op.inputs, *op.outputs))


def _verdict(op: OpInfo, on_edgetpu: bool, status: str, reason: str) -> OpVerdict:
    return OpVerdict(index=op.index, name=op.name, version=op.version, on_edgetpu=on_edgetpu,
                     reason=reason, status=status, table_name=op.table_name,
                     inputs=list(op.inputs), outputs=list(op.outputs))


def _unparsable_report(model: TfliteModel, problems: list) -> CompatReport:
    bad = {op.index: reason for op, reason in problems}
    first_op = problems[0][0]
    summary = f"{first_op.name} version {first_op.version}"
    verdicts = [
        _verdict(op, False, STATUS_NOT_PARSED,
                 bad.get(op.index, f"the compiler cannot parse this file ({summary})"))
        for op in model.ops]
    return CompatReport(
        source=model.source, ops=verdicts, compiler_can_parse=False, compiled=False,
        parameter_bytes=edgetpu_parameter_bytes(verdicts), cut_index=first_op.index,
        compiler_error=f"Didn't find op for builtin opcode '{first_op.name}' version '{first_op.version}'")


def _uniform_report(model: TfliteModel, status: str, error: str, reason: str) -> CompatReport:
    verdicts = [_verdict(op, False, status, reason) for op in model.ops]
    return CompatReport(source=model.source, ops=verdicts, compiler_can_parse=True, compiled=False,
                        parameter_bytes=edgetpu_parameter_bytes(verdicts), cut_index=0 if verdicts else None,
                        compiler_error=error)


def _compiled_report(model: TfliteModel) -> CompatReport:
    verdicts = []
    for op in model.ops:
        if op.custom_code == EDGETPU_CUSTOM_OP:
            verdicts.append(_verdict(op, True, rules.STATUS_MAPPED, ""))
        else:
            verdicts.append(_verdict(op, False, STATUS_CPU_IN_COMPILED,
                                     "runs on the CPU in the compiled model (outside edgetpu-custom-op)"))
    problems = [p for p in (rules.version_problem(op) for op in model.ops) if p]
    # The cut is where the CPU part starts after the Edge TPU subgraph (a CPU QUANTIZE may precede it).
    first_tpu = next(v.index for v in verdicts if v.on_edgetpu)
    cut = next((v.index for v in verdicts[first_tpu:] if not v.on_edgetpu), None)
    return CompatReport(source=model.source, ops=verdicts, compiler_can_parse=not problems,
                        compiled=True, parameter_bytes=edgetpu_parameter_bytes(verdicts), cut_index=cut)


# ---- text output -------------------------------------------------------------------------------

def summary_line(report: CompatReport) -> str:
    """One line: where the ops run, the first CPU op, parsing, and the Edge TPU parameters against the
    on-chip memory (not for a model the compiler would refuse: nothing of it reaches the Edge TPU)."""
    name = os.path.basename(report.source)
    total = len(report.ops)
    if report.compiled:
        counts = Counter(report.cpu_op_names())
        cpu = ", ".join(f"{n} x{c}" if c > 1 else n for n, c in counts.items()) or "none"
        return (f"{name}: compiled; {report.edgetpu_ops} edgetpu-custom-op, {report.cpu_ops} CPU ops "
                f"({cpu})")
    if not report.compiler_can_parse:
        return (f"{name}: the Edge TPU compiler {rules.COMPILER_VERSION} cannot parse this model: "
                f"{report.compiler_error}")
    if report.compiler_error:
        return f"{name}: the compiler would fail: {report.compiler_error}"
    cut = report.cut_op
    where = ("all ops map" if cut is None else
             f"CPU from op {cut.index} {cut.name} ({cut.reason})")
    return (f"{name}: {report.edgetpu_ops} of {total} ops on the Edge TPU, {report.cpu_ops} on the CPU; "
            f"{where}; {parameters_text(report)}")


def parameters_text(report: CompatReport) -> str:
    """The Edge TPU ops' constant bytes against the on-chip memory, and what happens when they exceed it."""
    text = (f"Edge TPU parameters {_human_bytes(report.parameter_bytes)} of about "
            f"{_human_bytes(report.parameter_cache_bytes)} on-chip memory")
    if report.fits_parameter_cache:
        return text
    return (f"{text} (may NOT fit: real compiler 16 runs could cache {_human_bytes(PARAMETER_CACHE_BYTES)} to "
            f"{_human_bytes(PARAMETER_CACHE_MOST_SEEN_BYTES)}, depending on the model; what does not fit "
            "streams from host memory every inference, which is slow)")


def parameter_memory_warning(n_bytes: int, config: Any, compiler_said: bool = False) -> str:
    """What to say when the Edge TPU parameters may not fit its on-chip memory (``n_bytes`` of them predicted),
    or the compiler said ``n_bytes`` stream from host memory: the model still runs on the TPU, slower; the class
    head grows with every class (about 0.13 MiB each with the ssd head at 320 px)."""
    from edge_trash.terminal import plural

    said = (f"the compiler streams {_human_bytes(n_bytes)} of the Edge TPU parameters from host memory" if compiler_said
            else f"the Edge TPU parameters, {_human_bytes(n_bytes)}, may not fit its on-chip memory (about "
                 f"{_human_bytes(PARAMETER_CACHE_BYTES)}): what does not fit streams from host memory")
    head = getattr(config, "head", "")
    ways = ([] if head == "ssdlite" else ["train with --config ssdlite_mobilenet_v2_320 (its depthwise heads hold "
                                          "a fraction of the ssd head's parameters)"])
    ways += [f"fewer classes ({plural(int(config.num_classes), 'class')} now: build-tfrecords --class-map or "
             "--supercategories)", "a smaller model.width_multiplier"]
    return f"{said} at every inference, slower than a model that fits; to fit: " + ", or ".join(ways)


def format_table(report: CompatReport) -> str:
    """A readable op table: index, op, version, where it runs, why, then each op's tensors."""
    lines = [f"{'#':>4}  {'op':<30} {'ver':>3}  {'runs on':<8} reason"]
    for op in report.ops:
        where = "EdgeTPU" if op.on_edgetpu else "CPU"
        lines.append(f"{op.index:>4}  {op.name:<30} {op.version:>3}  {where:<8} {op.reason}")
        ins = ", ".join(_tensor_text(t) for t in op.inputs)
        outs = ", ".join(_tensor_text(t) for t in op.outputs)
        lines.append(f"{'':>6}{ins} -> {outs}")
    return "\n".join(lines)


def _tensor_text(tensor: Optional[TensorInfo]) -> str:
    if tensor is None:
        return "-"
    text = f"{tensor.dtype}[{','.join(str(d) for d in tensor.shape)}]"
    q = tensor.quantization
    if q is not None:
        if q.per_channel:
            text += f" per-channel({len(q.scale)}, axis {q.axis})"
        else:
            text += f" s={q.scale[0]:.6g} zp={q.zero_point[0]}"
    return text + (" const" if tensor.constant else "")


def _human_bytes(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:.2f} KiB"
    return f"{n} B"
