"""Build one ``tf.train.Example`` in the TF Object Detection API / Model Garden schema."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import List, Sequence

from edge_trash.tfrecords import feature_keys as K


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


def make_example_bytes(jpeg: bytes, width: int, height: int, filename: str, source_id: str,
                       objects: Sequence[ObjectBox]) -> bytes:
    """Serialise one record deterministically (same input, same bytes)."""
    import tensorflow as tf

    def b(values: List[bytes]) -> "tf.train.Feature":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    def f(values: List[float]) -> "tf.train.Feature":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def i(values: List[int]) -> "tf.train.Feature":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    feature = {
        K.ENCODED: b([jpeg]),
        K.FORMAT: b([b"jpeg"]),
        K.HEIGHT: i([height]),
        K.WIDTH: i([width]),
        K.FILENAME: b([filename.encode("utf-8")]),
        K.SOURCE_ID: b([source_id.encode("utf-8")]),
        K.KEY_SHA256: b([hashlib.sha256(jpeg).hexdigest().encode("ascii")]),
        K.BBOX_XMIN: f([o.xmin for o in objects]),
        K.BBOX_YMIN: f([o.ymin for o in objects]),
        K.BBOX_XMAX: f([o.xmax for o in objects]),
        K.BBOX_YMAX: f([o.ymax for o in objects]),
        K.CLASS_LABEL: i([o.label for o in objects]),
        K.CLASS_TEXT: b([o.text.encode("utf-8") for o in objects]),
        K.IS_CROWD: i([o.is_crowd for o in objects]),
        K.AREA: f([o.area for o in objects]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)
