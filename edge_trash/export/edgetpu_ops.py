"""What the Edge TPU compiler 16 accepts, op by op: the op table, the op-version table and the limits.

Sources: Coral's "TensorFlow models on the Edge TPU" op table and compiler behaviour, summarised in
``shared/edgetpu/README.md`` sections 2 and 3, and checked against real compiled models. Each limit
is one small function with a one-line comment saying which rule it models; a limit returns a reason
string when the op cannot map, or None.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np

from edge_trash.export.tflite_model import OpInfo, TensorInfo

COMPILER_VERSION = "16.0"

# Status strings exactly as the compiler prints them in its op table.
STATUS_MAPPED = "Mapped to Edge TPU"
STATUS_AFTER_CUT = "More than one subgraph is not supported"
STATUS_LIMITATION = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
STATUS_DTYPE = "Operation is working on an unsupported data type"
STATUS_NOT_SUPPORTED = "Operation not supported"

# Ops the Edge TPU runs (README section 2). Not modelled: EXPAND_DIMS, PACK, QUANTIZE, SUM and
# TRANSPOSE_CONV need runtime >= 13, RSQRT, SQUARED_DIFFERENCE and TRANSPOSE >= 14 (compiler -m flag).
EDGETPU_OPS = frozenset({
    "ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION",
    "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "PACK", "QUANTIZE", "SUM", "TRANSPOSE_CONV",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "TANH", "RELU", "RELU6", "RELU_N1_TO_1",
    "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",  # unidirectional only: no BIDIRECTIONAL_SEQUENCE_LSTM
    "MEAN", "PAD", "PRELU", "REDUCE_MAX", "REDUCE_MIN",
    "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "SLICE", "SPACE_TO_DEPTH", "SPLIT",
    "SOFTMAX", "SQUEEZE", "STRIDED_SLICE", "RSQRT", "SQUARED_DIFFERENCE", "TRANSPOSE",
})

# Highest version of each builtin op the compiler 16 parses (TFLite at TensorFlow 2.5, README section 3).
MAX_PARSED_VERSION: Dict[str, int] = {
    "ABS": 3, "ADD": 3, "ARG_MAX": 2, "AVERAGE_POOL_2D": 3, "CAST": 1, "CONCATENATION": 3,
    "CONV_2D": 5, "DEPTH_TO_SPACE": 2, "DEPTHWISE_CONV_2D": 6, "DEQUANTIZE": 4, "DIV": 2, "EXP": 1,
    "EXPAND_DIMS": 1, "FULLY_CONNECTED": 9, "GATHER": 5, "GATHER_ND": 3, "HARD_SWISH": 1,
    "L2_NORMALIZATION": 2, "LEAKY_RELU": 2, "LOGISTIC": 3, "MAX_POOL_2D": 3, "MAXIMUM": 4, "MEAN": 3,
    "MINIMUM": 4, "MUL": 4, "PACK": 3, "PAD": 3, "PADV2": 3, "PRELU": 1, "QUANTIZE": 2,
    "REDUCE_MAX": 3, "REDUCE_MIN": 3, "RELU": 3, "RELU6": 3, "RELU_N1_TO_1": 1, "RESHAPE": 1,
    "RESIZE_BILINEAR": 4, "RESIZE_NEAREST_NEIGHBOR": 4, "RSQRT": 2, "SLICE": 5, "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2, "SPLIT": 4, "SPLIT_V": 2, "SQUARED_DIFFERENCE": 2, "SQUEEZE": 2,
    "STRIDED_SLICE": 5, "SUB": 5, "SUM": 2, "TANH": 3, "TILE": 2, "TRANSPOSE": 5,
    "TRANSPOSE_CONV": 3, "UNPACK": 4,
}
# Builtin codes above HASHTABLE_SIZE (139) came after TensorFlow 2.5: the compiler has no kernel for them.
LAST_PARSED_BUILTIN_CODE = 139

# Tensor types the Edge TPU computes on; constants of these types (plus int32/int64 biases and shape
# operands) are fine. Everything else on an activation is "working on an unsupported data type".
EDGETPU_ACTIVATION_DTYPES = frozenset({"int8", "uint8"})
CONSTANT_DTYPES = frozenset({"int8", "uint8", "int32", "int64"})

SOFTMAX_MAX_ELEMENTS = 16000
_FUSED_NONE = 0  # ActivationFunctionType.NONE
_FC_DEFAULT_WEIGHTS = 0  # FullyConnectedOptionsWeightsFormat.DEFAULT


def version_problem(op: OpInfo) -> Optional[str]:
    """Why the compiler 16 cannot parse this op's version, or None when it can (custom ops always parse)."""
    if op.is_custom:
        return None
    if op.builtin_code > LAST_PARSED_BUILTIN_CODE:
        return (f"{op.name} (builtin code {op.builtin_code}) is newer than TensorFlow 2.5: the Edge TPU "
                f"compiler {COMPILER_VERSION} cannot parse it")
    limit = MAX_PARSED_VERSION.get(op.name)
    if limit is not None and op.version > limit:
        return (f"{op.name} version {op.version} is above {limit}, the highest the Edge TPU compiler "
                f"{COMPILER_VERSION} parses (Didn't find op for builtin opcode '{op.name}' version "
                f"'{op.version}')")
    return None


def dtype_problem(op: OpInfo) -> Optional[str]:
    """The first tensor of the op whose type the Edge TPU cannot compute on, described, or None."""
    for role, tensors in (("input", op.inputs), ("output", op.outputs)):
        for position, tensor in enumerate(tensors):
            if tensor is None or tensor.variable:
                continue  # omitted optional input; LSTM state tensors are handled by the op itself
            allowed = CONSTANT_DTYPES if tensor.constant else EDGETPU_ACTIVATION_DTYPES
            if tensor.dtype not in allowed:
                kind = "constant" if tensor.constant else "tensor"
                return (f"{role} {position} ({kind} {tensor.name!r}) is {tensor.dtype}: the Edge TPU "
                        "needs int8/uint8 quantized tensors")
    return None


def activation_rank_problem(op: OpInfo) -> Optional[str]:
    """A rank-4+ activation with size > 1 outside its 3 innermost dims (batch > 1), or None."""
    for tensor in _activations(op):
        if len(tensor.shape) >= 4 and any(d != 1 for d in tensor.shape[:-3]):
            return (f"tensor {tensor.name!r} has shape {list(tensor.shape)}: only the 3 innermost "
                    "dimensions may exceed 1 (batch must be 1)")
    return None


def limit_problem(op: OpInfo) -> Optional[str]:
    """The op-specific limit (README section 2) this op breaks, or None when it is within all limits."""
    check = OP_LIMITS.get(op.name)
    if check is None:
        return None
    try:
        return check(op)
    except IndexError:  # a malformed op without the operands its schema requires
        return (f"{op.name} has {len(op.inputs)} inputs and {len(op.outputs)} outputs, not the operands "
                "the TFLite schema defines for it")


# ---- one function per limit ------------------------------------------------------------------

def _no_fused_activation(op: OpInfo) -> Optional[str]:
    # Pools and CONCATENATION map only without a fused activation.
    act = op.options.get("FusedActivationFunction", _FUSED_NONE)
    if act != _FUSED_NONE:
        return f"{op.name} has a fused activation ({_activation_name(act)}); the Edge TPU needs none here"
    return None


def _concatenation(op: OpInfo) -> Optional[str]:
    # No fused activation; a constant input only as one of exactly 2 inputs, and all zeros.
    problem = _no_fused_activation(op)
    if problem:
        return problem
    constants = [t for t in op.inputs if t is not None and t.constant]
    if not constants:
        return None
    if len(op.inputs) != 2:
        return (f"CONCATENATION has a constant input among {len(op.inputs)} inputs; a constant is "
                "allowed only as one of exactly 2 inputs")
    values = constants[0].values()
    if values is None or np.any(values.astype(np.int64) != _zero_point(constants[0])):
        return f"CONCATENATION has a constant input {constants[0].name!r} that is not all zeros"
    return None


def _same_dilation(op: OpInfo) -> Optional[str]:
    # CONV_2D / DEPTHWISE_CONV_2D need the same dilation in x and y, and constant weights.
    dh, dw = op.options.get("DilationHFactor", 1), op.options.get("DilationWFactor", 1)
    if dh != dw:
        return f"{op.name} dilation differs in y and x ({dh} vs {dw})"
    return _constant_weights(op)


def _constant_weights(op: OpInfo) -> Optional[str]:
    # Parameters must be constant at compile time (filter of a convolution / fully connected layer).
    if len(op.inputs) > 1 and op.inputs[1] is not None and not op.inputs[1].constant:
        return f"{op.name} weights {op.inputs[1].name!r} are not constant"
    return None


def _fully_connected(op: OpInfo) -> Optional[str]:
    # FULLY_CONNECTED: default weights format only, constant weights, 1-D output.
    fmt = op.options.get("WeightsFormat", _FC_DEFAULT_WEIGHTS)
    if fmt != _FC_DEFAULT_WEIGHTS:
        return f"FULLY_CONNECTED uses weights format {fmt} (shuffled); only the default format maps"
    problem = _constant_weights(op)
    if problem:
        return problem
    out = op.outputs[0].shape if op.outputs else ()
    if _non_unit_dims(out) > 1:
        return f"FULLY_CONNECTED output {list(out)} is not 1-D"
    return None


def _mean(op: OpInfo) -> Optional[str]:
    # MEAN: no reduction over batch; a reduction over depth needs depth % 4 == 0.
    problem = _reduction_over_batch(op)
    if problem:
        return problem
    shape = op.inputs[0].shape
    axes = _axes(op)
    if axes is not None and shape and (len(shape) - 1) in axes and shape[-1] % 4 != 0:
        return f"MEAN reduces over depth {shape[-1]}, which is not a multiple of 4"
    return None


def _reduction_over_batch(op: OpInfo) -> Optional[str]:
    # MEAN / REDUCE_MAX / REDUCE_MIN / SUM must not reduce over the batch dimension of an NHWC tensor.
    shape = op.inputs[0].shape
    axes = _axes(op)
    if axes is None:
        return f"{op.name} axis is not a constant input"
    if len(shape) >= 4 and 0 in axes:
        return f"{op.name} reduces over the batch dimension (axis 0 of {list(shape)})"
    return None


def _pad(op: OpInfo) -> Optional[str]:
    # PAD must not pad the batch dimension.
    paddings = op.inputs[1].values() if len(op.inputs) > 1 and op.inputs[1] is not None else None
    if paddings is None:
        return "PAD paddings are not constant"
    paddings = paddings.reshape(-1, 2)
    if len(paddings) >= 4 and np.any(paddings[0] != 0):
        return f"PAD pads the batch dimension ({paddings[0].tolist()})"
    return None


def _prelu(op: OpInfo) -> Optional[str]:
    # PRELU alpha must be 1-D (Keras PReLU(shared_axes=[1, 2])).
    alpha = op.inputs[1]
    if alpha is not None and _non_unit_dims(alpha.shape) > 1:
        return f"PRELU alpha has shape {list(alpha.shape)}; it must be 1-D (Keras shared_axes=[1, 2])"
    return None


def _softmax(op: OpInfo) -> Optional[str]:
    # SOFTMAX: 1-D input of at most 16000 elements.
    shape = op.inputs[0].shape
    if _non_unit_dims(shape) > 1:
        return f"SOFTMAX input {list(shape)} is not 1-D"
    size = int(np.prod(shape)) if shape else 1
    if size > SOFTMAX_MAX_ELEMENTS:
        return f"SOFTMAX input has {size} elements, above {SOFTMAX_MAX_ELEMENTS}"
    return None


def _strided_slice(op: OpInfo) -> Optional[str]:
    # STRIDED_SLICE: all strides 1, ellipsis mask 0, new-axis mask 0.
    if op.options.get("EllipsisMask", 0):
        return f"STRIDED_SLICE ellipsis_mask is {op.options['EllipsisMask']}; it must be 0"
    if op.options.get("NewAxisMask", 0):
        return f"STRIDED_SLICE new_axis_mask is {op.options['NewAxisMask']}; it must be 0"
    strides = op.inputs[3].values() if len(op.inputs) > 3 and op.inputs[3] is not None else None
    if strides is None:
        return "STRIDED_SLICE strides are not constant"
    if np.any(strides != 1):
        return f"STRIDED_SLICE strides are {strides.tolist()}; all must be 1"
    return None


def _squeeze(op: OpInfo) -> Optional[str]:
    # SQUEEZE maps only when it drops leading 1s (no relayout of the data); uncertain rule.
    shape = op.inputs[0].shape
    dims = op.options.get("SqueezeDims") or [i for i, d in enumerate(shape) if d == 1]
    dims = sorted(d % len(shape) for d in dims) if shape else []
    first_big = next((i for i, d in enumerate(shape) if d != 1), len(shape))
    if any(d > first_big for d in dims):
        return f"SQUEEZE drops dims {dims} of {list(shape)} after a non-unit dim (needs a relayout)"
    return None


def _resize(op: OpInfo) -> Optional[str]:
    # RESIZE_*: align_corners from a 1-pixel input has no corners to align; the compiler keeps it on the
    # CPU (seen in deeplabv3_mnv2: a 1x1 -> 33x33 RESIZE_BILINEAR stayed on the CPU).
    shape = op.inputs[0].shape
    if op.options.get("AlignCorners") and len(shape) == 4 and (shape[1] == 1 or shape[2] == 1):
        out = op.outputs[0].shape
        if tuple(out[1:3]) != tuple(shape[1:3]):
            return (f"{op.name} with align_corners from a {shape[1]}x{shape[2]} input "
                    "(precision limit)")
    return None


def _pack(op: OpInfo) -> Optional[str]:
    # PACK must not stack along the batch dimension.
    if op.options.get("Axis", 0) == 0 and op.options.get("ValuesCount", len(op.inputs)) > 1:
        return "PACK stacks along axis 0 (the batch dimension)"
    return None


def _split(op: OpInfo) -> Optional[str]:
    # SPLIT must not split the batch dimension of an NHWC tensor.
    axis_tensor, data = op.inputs[0], op.inputs[1] if len(op.inputs) > 1 else None
    axis = axis_tensor.values() if axis_tensor is not None else None
    if axis is None or data is None:
        return "SPLIT axis is not constant"
    if len(data.shape) >= 4 and int(axis.ravel()[0]) % len(data.shape) == 0:
        return "SPLIT splits the batch dimension"
    return None


OP_LIMITS: Dict[str, Callable[[OpInfo], Optional[str]]] = {
    "AVERAGE_POOL_2D": _no_fused_activation,
    "MAX_POOL_2D": _no_fused_activation,
    "CONCATENATION": _concatenation,
    "CONV_2D": _same_dilation,
    "DEPTHWISE_CONV_2D": _same_dilation,
    "TRANSPOSE_CONV": _constant_weights,
    "FULLY_CONNECTED": _fully_connected,
    "MEAN": _mean,
    "REDUCE_MAX": _reduction_over_batch,
    "REDUCE_MIN": _reduction_over_batch,
    "SUM": _reduction_over_batch,
    "PAD": _pad,
    "PRELU": _prelu,
    "SOFTMAX": _softmax,
    "STRIDED_SLICE": _strided_slice,
    "SQUEEZE": _squeeze,
    "RESIZE_BILINEAR": _resize,
    "RESIZE_NEAREST_NEIGHBOR": _resize,
    "PACK": _pack,
    "SPLIT": _split,
}


# ---- helpers -----------------------------------------------------------------------------------

def _activations(op: OpInfo) -> List[TensorInfo]:
    return [t for t in (*op.inputs, *op.outputs) if t is not None and not t.constant]


def _non_unit_dims(shape: tuple) -> int:
    return sum(1 for d in shape if d != 1)


def _zero_point(tensor: TensorInfo) -> int:
    return tensor.quantization.zero_point[0] if tensor.quantization else 0


def _axes(op: OpInfo) -> Optional[List[int]]:
    axis_tensor = op.inputs[1]  # IndexError for a malformed op, reported by limit_problem
    if axis_tensor is None:
        return None
    values = axis_tensor.values()
    if values is None:
        return None
    rank = len(op.inputs[0].shape) or 1
    return sorted({int(a) % rank for a in values.ravel()})


def _activation_name(code: int) -> str:
    names = {1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
    return names.get(code, str(code))
