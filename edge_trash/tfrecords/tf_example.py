"""Build one ``tf.train.Example`` in the TF Object Detection API / Model Garden schema.

The converter does not import TensorFlow: that import alone costs seconds in every
process, more than converting a hundred photos. ``tf.train.Example`` is a small
protobuf, so its wire format is written here directly. The bytes are identical to
``tf.train.Example.SerializeToString(deterministic=True)`` (map entries sorted by
key; a test compares the two on every kind of value).

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
from typing import Dict, Optional, Sequence, Tuple, Union

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

