"""Build (and read back) one ``tf.train.Example`` in the TF Object Detection API / Model Garden schema.

The converter does not import TensorFlow: that import alone costs seconds in every
process, more than converting a hundred photos. ``tf.train.Example`` is a small
protobuf, so its wire format is written here directly. The bytes are identical to
``tf.train.Example.SerializeToString(deterministic=True)`` (map entries sorted by
key; a test compares the two on every kind of value). :func:`parse_example` reads such
bytes back, and those TensorFlow or Model Garden's converter wrote, for ``analyze``.

Wire format (``tensorflow/core/example/{example,feature}.proto``)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }      # entry: key = 1, value = 2
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                            Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple, Union

from edge_trash.tfrecords import feature_keys as K

_LENGTH_DELIMITED = 2
BYTES, FLOAT, INT64 = 1, 2, 3  # Feature's oneof field numbers: bytes_list, float_list, int64_list
FeatureValue = Tuple[int, Union[Sequence[bytes], Sequence[float], Sequence[int]]]


@dataclass(frozen=True)
class ObjectBox:
    """One object of a record: box normalised to [0, 1], our 1-based class id."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float
    label: int
    text: str
    is_crowd: int
    area: float  # in pixels of the encoded image


def _varint(value: int) -> bytes:
    """Protobuf base-128 varint; negative int64 values take ten bytes (two's complement)."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _feature(kind: int, values: Sequence) -> bytes:
    if kind == BYTES:
        body = b"".join(_field(1, v) for v in values)
    elif kind == FLOAT:
        body = _field(1, struct.pack(f"<{len(values)}f", *values)) if values else b""
    elif kind == INT64:
        body = _field(1, b"".join(_varint(int(v)) for v in values)) if values else b""
    else:
        raise ValueError(f"unknown Feature kind {kind}; expected 1 (bytes), 2 (float) or 3 (int64)")
    return _field(kind, body)


def serialize_example(features: Dict[str, FeatureValue]) -> bytes:
    """Serialise ``{key: (kind, values)}`` as a ``tf.train.Example``, map keys sorted (deterministic).

    ``kind`` is ``BYTES``, ``FLOAT`` or ``INT64``.
    """
    entries = []
    for key in sorted(features, key=lambda k: k.encode("utf-8")):
        kind, values = features[key]
        entries.append(_field(1, _field(1, key.encode("utf-8")) + _field(2, _feature(kind, values))))
    return _field(1, b"".join(entries))



_KIND_NAMES = {BYTES: "bytes", FLOAT: "float", INT64: "int64"}
_VARINT, _FIXED64, _FIXED32 = 0, 1, 5


def _read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("a varint runs past its message")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[Tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of each field of one message: an int for
    varints and fixed-size fields (fixed ones as their raw bytes), bytes for
    length-delimited ones."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire == _LENGTH_DELIMITED:
            size, pos = _read_varint(buf, pos)
            if pos + size > end:
                raise ValueError("a field runs past its message")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (_FIXED32, _FIXED64):
            size = 4 if wire == _FIXED32 else 8
            if pos + size > end:
                raise ValueError("a field runs past its message")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"wire type {wire} is not used by tf.train.Example")
        yield number, wire, value


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_values(kind: int, body: bytes) -> list:
    """The values of a BytesList, FloatList or Int64List message (packed or not)."""
    values: list = []
    for number, wire, value in _fields(body):
        if number != 1:
            continue
        if kind == BYTES and wire == _LENGTH_DELIMITED:
            values.append(value)
        elif kind == FLOAT and wire == _LENGTH_DELIMITED:  # packed
            if len(value) % 4:
                raise ValueError("a packed float list is not a whole number of floats")
            values.extend(struct.unpack(f"<{len(value) // 4}f", value))
        elif kind == FLOAT and wire == _FIXED32:
            values.append(struct.unpack("<f", value)[0])
        elif kind == INT64 and wire == _LENGTH_DELIMITED:  # packed
            pos = 0
            while pos < len(value):
                v, pos = _read_varint(value, pos)
                values.append(_int64(v))
        elif kind == INT64 and wire == _VARINT:
            values.append(_int64(value))
        else:
            raise ValueError(f"a {_KIND_NAMES[kind]} list holds a field of wire type {wire}")
    return values


def parse_example(data: bytes) -> Dict[str, Tuple[str, list]]:
    """Read a serialised ``tf.train.Example`` without TensorFlow: ``{key: (kind, values)}``
    with kind ``"bytes"``, ``"float"`` or ``"int64"`` (``""`` for a feature with no list).
    Reads what TensorFlow and :func:`serialize_example` write (packed or unpacked lists,
    fields in any order, unknown fields skipped); a later entry for a key replaces an
    earlier one, as in protobuf. Raises ``ValueError`` when the bytes are no Example."""
    out: Dict[str, Tuple[str, list]] = {}
    for number, wire, features in _fields(data):
        if number != 1 or wire != _LENGTH_DELIMITED:
            continue
        for entry_number, entry_wire, entry in _fields(features):
            if entry_number != 1 or entry_wire != _LENGTH_DELIMITED:
                continue
            key, feature = b"", b""
            for n, w, v in _fields(entry):
                if n == 1 and w == _LENGTH_DELIMITED:
                    key = v
                elif n == 2 and w == _LENGTH_DELIMITED:
                    feature = v
            kind, values = "", []
            for n, w, v in _fields(feature):
                if n in _KIND_NAMES and w == _LENGTH_DELIMITED:
                    kind, values = _KIND_NAMES[n], _list_values(n, v)
            out[key.decode("utf-8", "replace")] = (kind, values)
    return out


def make_example_bytes(jpeg: bytes, width: int, height: int, filename: str, source_id: str,
                       objects: Sequence[ObjectBox], sha256_hex: Optional[str] = None) -> bytes:
    """Serialise one record deterministically (same input, same bytes).

    ``sha256_hex`` is the JPEG's digest when the caller already has it (else computed).
    """
    feature: Dict[str, FeatureValue] = {
        K.ENCODED: (BYTES, [jpeg]),
        K.FORMAT: (BYTES, [b"jpeg"]),
        K.HEIGHT: (INT64, [height]),
        K.WIDTH: (INT64, [width]),
        K.FILENAME: (BYTES, [filename.encode("utf-8")]),
        K.SOURCE_ID: (BYTES, [source_id.encode("utf-8")]),
        K.KEY_SHA256: (BYTES, [(sha256_hex or hashlib.sha256(jpeg).hexdigest()).encode("ascii")]),
        K.BBOX_XMIN: (FLOAT, [o.xmin for o in objects]),
        K.BBOX_YMIN: (FLOAT, [o.ymin for o in objects]),
        K.BBOX_XMAX: (FLOAT, [o.xmax for o in objects]),
        K.BBOX_YMAX: (FLOAT, [o.ymax for o in objects]),
        K.CLASS_LABEL: (INT64, [o.label for o in objects]),
        K.CLASS_TEXT: (BYTES, [o.text.encode("utf-8") for o in objects]),
        K.IS_CROWD: (INT64, [o.is_crowd for o in objects]),
        K.AREA: (FLOAT, [o.area for o in objects]),
    }
    return serialize_example(feature)

