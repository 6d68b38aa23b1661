"""Read a ``.tflite`` flatbuffer into plain Python values, without TensorFlow.

Uses the ``tflite`` package (code generated from TFLite's ``schema.fbs``). Only the
main subgraph (index 0) is described op by op: it is what the Edge TPU compiler maps.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import tflite
from tflite.utils import BUILTIN_OPCODE2NAME

TFLITE_FILE_IDENTIFIER = b"TFL3"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
CUSTOM = "CUSTOM"

_TENSOR_TYPE_NAMES: Dict[int, str] = {
    value: name.lower() for name, value in vars(tflite.TensorType).items()
    if not name.startswith("_") and isinstance(value, int)}
_OPTIONS_CLASS_NAMES: Dict[int, str] = {
    value: name for name, value in vars(tflite.BuiltinOptions).items()
    if not name.startswith("_") and isinstance(value, int) and name != "NONE"}


_NUMPY_DTYPES: Dict[str, str] = {
    "float32": "<f4", "float16": "<f2", "float64": "<f8", "int32": "<i4", "int64": "<i8",
    "int16": "<i2", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8", "int8": "i1", "uint8": "u1",
    "bool": "?"}


class TfliteFormatError(ValueError):
    """The input is not a readable TFLite flatbuffer."""


@dataclass(frozen=True)
class Quantization:
    """Affine quantization of one tensor: ``real = scale * (q - zero_point)``."""

    scale: Tuple[float, ...]
    zero_point: Tuple[int, ...]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        """True when there is one scale per channel along ``axis``."""
        return len(self.scale) > 1

    def to_json_dict(self, per_channel_values: bool = True) -> Dict[str, Any]:
        """JSON-ready form: per-channel scales kept whole, or (``per_channel_values=False``) as their count and
        range, as a bundle's compat.json holds them (the model file has them all)."""
        if self.per_channel and not per_channel_values:
            return {"channels": len(self.scale), "scale_range": [min(self.scale), max(self.scale)],
                    "zero_point_range": [min(self.zero_point), max(self.zero_point)],
                    "per_channel": True, "axis": self.axis}
        return {"scale": list(self.scale), "zero_point": list(self.zero_point),
                "per_channel": self.per_channel, "axis": self.axis}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph."""

    index: int
    name: str
    dtype: str  # "int8", "uint8", "float32", ... (TFLite TensorType, lower case)
    shape: Tuple[int, ...]
    quantization: Optional[Quantization]
    constant: bool  # has data in the file (weights, biases, shape operands)
    variable: bool  # a state tensor (LSTM cell state)
    data_bytes: int
    buffer_index: int
    raw: Optional[np.ndarray] = field(default=None, repr=False, compare=False)  # uint8 view of the data

    def values(self) -> Optional[np.ndarray]:
        """The constant data as an array of the tensor's dtype and shape, or None when not constant."""
        if self.raw is None or self.dtype not in _NUMPY_DTYPES:
            return None
        array = np.frombuffer(self.raw.tobytes(), dtype=_NUMPY_DTYPES[self.dtype])
        if self.shape and int(np.prod(self.shape)) == array.size:
            return array.reshape(self.shape)
        return array

    @property
    def is_quantized_int8(self) -> bool:
        """int8/uint8 with a scale: what the Edge TPU computes on."""
        return self.dtype in ("int8", "uint8") and self.quantization is not None

    def to_json_dict(self, per_channel_values: bool = True) -> Dict[str, Any]:
        """JSON-ready form (``per_channel_values``: see ``Quantization.to_json_dict``)."""
        return {"index": self.index, "name": self.name, "dtype": self.dtype,
                "shape": list(self.shape), "constant": self.constant,
                "quantization": self.quantization.to_json_dict(per_channel_values) if self.quantization else None}


@dataclass(frozen=True)
class OpInfo:
    """One operator of the main subgraph, in execution order."""

    index: int
    name: str  # builtin name ("CONV_2D") or the custom code ("TFLite_Detection_PostProcess")
    builtin_code: int
    custom_code: Optional[str]
    version: int
    inputs: Tuple[Optional[TensorInfo], ...]  # None for an omitted optional input
    outputs: Tuple[TensorInfo, ...]
    options: Dict[str, Any] = field(default_factory=dict)

    @property
    def is_custom(self) -> bool:
        """True for a custom op (``edgetpu-custom-op``, the detection postprocess, ...)."""
        return self.custom_code is not None

    @property
    def table_name(self) -> str:
        """The name the Edge TPU compiler's op table uses (``CUSTOM`` for every custom op)."""
        return CUSTOM if self.is_custom else self.name


@dataclass
class TfliteModel:
    """What the compatibility checker needs from a ``.tflite`` file."""

    source: str
    schema_version: int
    subgraph_count: int
    ops: List[OpInfo]
    tensors: List[TensorInfo]
    input_indices: Tuple[int, ...]
    output_indices: Tuple[int, ...]
    parameter_bytes: int
    file_bytes: int

    @property
    def inputs(self) -> List[TensorInfo]:
        """The main subgraph's input tensors."""
        return [self.tensors[i] for i in self.input_indices]

    @property
    def outputs(self) -> List[TensorInfo]:
        """The main subgraph's output tensors."""
        return [self.tensors[i] for i in self.output_indices]


def builtin_op_name(code: int) -> str:
    """The schema name of a builtin op code, or ``BUILTIN_<code>`` for a code newer than the schema."""
    return BUILTIN_OPCODE2NAME.get(code, f"BUILTIN_{code}")


def read_tflite(path_or_bytes: Union[str, os.PathLike, bytes, bytearray]) -> TfliteModel:
    """Read a TFLite flatbuffer from a path or from bytes.

    Raises ``TfliteFormatError`` naming the file when it is not a TFLite model
    (wrong identifier, truncated or corrupt tables, no subgraph).
    """
    if isinstance(path_or_bytes, (bytes, bytearray)):
        data, source = bytes(path_or_bytes), "<bytes>"
    else:
        source = str(path_or_bytes)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise TfliteFormatError(f"{source}: cannot read the file ({exc.strerror}).") from exc
    if len(data) < 8 or data[4:8] != TFLITE_FILE_IDENTIFIER:
        found = data[4:8] if len(data) >= 8 else data[:8]
        raise TfliteFormatError(
            f"{source}: not a TFLite model: expected the flatbuffer identifier "
            f"{TFLITE_FILE_IDENTIFIER.decode()!r} at bytes 4-8, found {found!r}. "
            "Pass the .tflite file written by the TFLite converter.")
    try:
        return _read_model(data, source)
    except TfliteFormatError:
        raise
    except (IndexError, struct.error, ValueError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise TfliteFormatError(
            f"{source}: corrupt or truncated TFLite flatbuffer ({type(exc).__name__}: {exc}). "
            "Re-export the model.") from exc


def _read_model(data: bytes, source: str) -> TfliteModel:
    model = tflite.Model.GetRootAs(data, 0)
    if model.SubgraphsLength() < 1:
        raise TfliteFormatError(f"{source}: the TFLite model has no subgraph.")
    opcodes = [_opcode(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    graph = model.Subgraphs(0)
    tensors = [_tensor(model, graph.Tensors(i), i, data) for i in range(graph.TensorsLength())]
    ops: List[OpInfo] = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        if op.OpcodeIndex() >= len(opcodes):
            raise TfliteFormatError(
                f"{source}: operator {i} uses opcode index {op.OpcodeIndex()} but the model "
                f"declares {len(opcodes)} operator codes.")
        code, custom, version = opcodes[op.OpcodeIndex()]
        inputs = tuple(None if t < 0 else tensors[t] for t in _ints(op, "Inputs"))
        outputs = tuple(tensors[t] for t in _ints(op, "Outputs"))
        ops.append(OpInfo(index=i, name=custom if custom is not None else builtin_op_name(code),
                          builtin_code=code, custom_code=custom, version=version,
                          inputs=inputs, outputs=outputs, options=_builtin_options(op)))
    io = {"input": tuple(_ints(graph, "Inputs")), "output": tuple(_ints(graph, "Outputs"))}
    for role, indices in io.items():
        if any(not 0 <= t < len(tensors) for t in indices):
            raise TfliteFormatError(f"{source}: the main subgraph's {role} list {list(indices)} names tensors "
                                    f"outside the {len(tensors)} it declares.")
    parameter_buffers = {t.buffer_index: t.data_bytes for t in tensors if t.constant}
    return TfliteModel(
        source=source, schema_version=model.Version(), subgraph_count=model.SubgraphsLength(),
        ops=ops, tensors=tensors, input_indices=io["input"], output_indices=io["output"],
        parameter_bytes=sum(parameter_buffers.values()), file_bytes=len(data))


def _opcode(code: Any) -> Tuple[int, Optional[str], int]:
    # deprecated_builtin_code (int8) holds codes < 127; newer codes sit in builtin_code: the real one is the max.
    builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
    custom = code.CustomCode()
    custom_name = custom.decode("utf-8") if custom is not None else None
    if custom_name is not None and builtin != tflite.BuiltinOperator.CUSTOM:
        custom_name = None
    return builtin, custom_name, max(1, code.Version())


def _ints(table: Any, field_name: str) -> List[int]:
    if getattr(table, f"{field_name}Length")() == 0:
        return []
    return [int(v) for v in getattr(table, f"{field_name}AsNumpy")()]


def _tensor(model: Any, tensor: Any, index: int, data: bytes) -> TensorInfo:
    buffer_index = tensor.Buffer()
    nbytes, raw = 0, None
    if 0 < buffer_index < model.BuffersLength():
        buffer = model.Buffers(buffer_index)
        nbytes = buffer.DataLength()
        if nbytes:
            raw = buffer.DataAsNumpy()
        elif buffer.Offset() > 1:  # models over 2 GB keep buffers after the flatbuffer
            start, nbytes = int(buffer.Offset()), int(buffer.Size())
            raw = np.frombuffer(data, dtype=np.uint8, count=nbytes, offset=start)
    quant = tensor.Quantization()
    quantization = None
    if quant is not None and quant.ScaleLength() > 0:
        zero_points = [int(z) for z in quant.ZeroPointAsNumpy()] if quant.ZeroPointLength() else [0]
        quantization = Quantization(
            scale=tuple(float(s) for s in quant.ScaleAsNumpy()),
            zero_point=tuple(zero_points), axis=int(quant.QuantizedDimension()))
    name = tensor.Name()
    return TensorInfo(
        index=index, name=name.decode("utf-8", "replace") if name else f"tensor_{index}",
        dtype=_TENSOR_TYPE_NAMES.get(tensor.Type(), f"type_{tensor.Type()}"),
        shape=tuple(_ints(tensor, "Shape")), quantization=quantization,
        constant=nbytes > 0, variable=bool(tensor.IsVariable()), data_bytes=nbytes,
        buffer_index=buffer_index, raw=raw)


def _builtin_options(op: Any) -> Dict[str, Any]:
    """Every scalar and vector field of the op's builtin options table, by schema field name."""
    class_name = _OPTIONS_CLASS_NAMES.get(op.BuiltinOptionsType())
    table = op.BuiltinOptions()
    if class_name is None or table is None or not hasattr(tflite, class_name):
        return {}
    options = getattr(tflite, class_name)()
    options.Init(table.Bytes, table.Pos)
    values: Dict[str, Any] = {}
    for attr in dir(options):
        if attr.startswith("_") or attr in ("Init", "GetRootAs") or attr.startswith("GetRootAs") \
                or attr.endswith(("BufferHasIdentifier", "Length", "IsNone")):
            continue
        if attr.endswith("AsNumpy"):
            base = attr[:-len("AsNumpy")]
            if getattr(options, f"{base}Length")() == 0:
                values[base] = []
            else:
                values[base] = [v.item() for v in np.asarray(getattr(options, attr)()).ravel()]
            continue
        if hasattr(options, f"{attr}AsNumpy") or hasattr(options, f"{attr}Length"):
            continue  # element accessor of a vector or a sub-table: read through AsNumpy above
        value = getattr(options, attr)()
        if isinstance(value, (bool, int, float)):
            values[attr] = value
        elif isinstance(value, bytes):
            values[attr] = value.decode("utf-8", "replace")
    return values
