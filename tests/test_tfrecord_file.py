"""The TensorFlow-free record writer and reader: byte-identical to TensorFlow's own Example and TFRecord
output, and reading back exactly what TensorFlow reads."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from edge_trash.tfrecords import feature_keys as K
from edge_trash.tfrecords.tf_example import (BYTES, FLOAT, INT64, ObjectBox, make_example_bytes, parse_example,
                                             serialize_example)
from edge_trash.tfrecords.tfrecord_file import TFRecordCorruptError, TFRecordWriter, masked_crc32c, read_records

tf = pytest.importorskip("tensorflow")

OBJECTS = [
    ObjectBox(0.1, 0.2, 0.5, 0.9, 1, "bottle", 0, 1234.5),
    ObjectBox(0.0, 0.0, 1.0, 1.0, 6, "cigarette \u00e9\u4e2d", 1, 0.125),
    ObjectBox(1 / 3, 2 / 3, 0.7000001, 0.99999994, 300, "x" * 200, 0, 3e7),
]


def _tf_example(jpeg: bytes, width: int, height: int, filename: str, source_id: str, objects) -> bytes:
    """The same record built with TensorFlow's own protobuf classes."""
    import hashlib

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

    def f(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=v))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=v))

    feature = {
        K.ENCODED: b([jpeg]), K.FORMAT: b([b"jpeg"]), K.HEIGHT: i([height]), K.WIDTH: i([width]),
        K.FILENAME: b([filename.encode()]), K.SOURCE_ID: b([source_id.encode()]),
        K.KEY_SHA256: b([hashlib.sha256(jpeg).hexdigest().encode()]),
        K.BBOX_XMIN: f([o.xmin for o in objects]), K.BBOX_YMIN: f([o.ymin for o in objects]),
        K.BBOX_XMAX: f([o.xmax for o in objects]), K.BBOX_YMAX: f([o.ymax for o in objects]),
        K.CLASS_LABEL: i([o.label for o in objects]), K.CLASS_TEXT: b([o.text.encode() for o in objects]),
        K.IS_CROWD: i([o.is_crowd for o in objects]), K.AREA: f([o.area for o in objects]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(deterministic=True)


@pytest.mark.parametrize("jpeg_size, objects", [(0, []), (100, OBJECTS[:1]), (70_000, OBJECTS),
                                                (3_000_000, OBJECTS[1:])])
def test_example_bytes_equal_tensorflows(jpeg_size, objects):
    jpeg = bytes((k * 7) % 256 for k in range(jpeg_size))  # varint lengths of 1, 2, 3 and 4 bytes
    ours = make_example_bytes(jpeg, 4032, 3024, "batch_1/000001.JPG", "123456789", objects)
    assert ours == _tf_example(jpeg, 4032, 3024, "batch_1/000001.JPG", "123456789", objects)


def test_serialize_example_int64_edges_and_key_order():
    values = [0, 1, 127, 128, 2**31, 2**63 - 1, -1, -(2**63)]
    features = {"z": (INT64, values), "a": (FLOAT, [-0.0, 1e-38, 3.4e38]), "\u00e9": (BYTES, [b"", b"\x00\xff"]),
                "empty_bytes": (BYTES, []), "empty_int": (INT64, [])}
    expected = tf.train.Example(features=tf.train.Features(feature={
        "z": tf.train.Feature(int64_list=tf.train.Int64List(value=values)),
        "a": tf.train.Feature(float_list=tf.train.FloatList(value=[-0.0, 1e-38, 3.4e38])),
        "\u00e9": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"", b"\x00\xff"])),
        "empty_bytes": tf.train.Feature(bytes_list=tf.train.BytesList(value=[])),
        "empty_int": tf.train.Feature(int64_list=tf.train.Int64List(value=[])),
    })).SerializeToString(deterministic=True)
    assert serialize_example(features) == expected
    parsed = tf.train.Example.FromString(serialize_example(features)).features.feature
    assert list(parsed["z"].int64_list.value) == values
    with pytest.raises(ValueError, match="unknown Feature kind 7"):
        serialize_example({"k": (7, [1])})


def test_masked_crc32c_known_vector():
    # CRC32C("123456789") = 0xE3069283 (RFC 3720's check value), rotated right by 15 = 0x2507C60D,
    # plus TFRecord's 0xA282EAD8. The file test below checks the same mask against TensorFlow's writer.
    assert masked_crc32c(b"123456789") == 0xC78AB0E5
    assert masked_crc32c(b"") == 0xA282EAD8  # CRC32C of nothing is 0


def test_tfrecord_file_equals_tensorflows_and_reads_back(tmp_path: Path):
    records = [b"", b"a", bytes(range(256)) * 300, make_example_bytes(b"\xff\xd8jpeg", 4, 3, "f", "1", OBJECTS)]
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "tf.tfrecord"
    with TFRecordWriter(ours) as writer:
        for r in records:
            writer.write(r)
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for r in records:
            writer.write(r)
    assert ours.read_bytes() == theirs.read_bytes()
    assert [r.numpy() for r in tf.data.TFRecordDataset(str(ours))] == records
    assert list(read_records(theirs)) == records  # our reader on TensorFlow's file
    closed = TFRecordWriter(tmp_path / "c.tfrecord")
    closed.close()
    closed.close()
    with pytest.raises(ValueError, match="after close"):
        closed.write(b"x")


def test_build_never_imports_tensorflow(tmp_path: Path, sample_dataset):
    code = ("import sys, json; from pathlib import Path\n"
            "from edge_trash.tfrecords.build import BuildOptions, build_tfrecords\n"
            f"r = build_tfrecords(BuildOptions(annotations=Path({str(sample_dataset.annotations)!r}), "
            f"images=Path({str(sample_dataset.images)!r}), out=Path({str(tmp_path / 'out')!r}), workers=2))\n"
            "print(json.dumps({'tf': 'tensorflow' in sys.modules, 'written': r['images_written']}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"tf": False, "written": sample_dataset.num_images - 4}


def test_reader_stops_at_a_damaged_record_and_names_its_offset(tmp_path: Path):
    path = tmp_path / "a.tfrecord"
    with TFRecordWriter(path) as writer:
        for r in (b"first", b"second", b"third"):
            writer.write(r)
    good = path.read_bytes()  # records at bytes 0, 21 (12 + 5 + 4) and 43 (21 + 12 + 6 + 4)
    cases = {
        "the data of the record at byte 21 fails its checksum": good[:21 + 12] + b"S" + good[21 + 13:],
        "the length of the record at byte 21 fails its checksum": good[:21] + b"\xff" + good[22:],
        "the file ends inside the record at byte 43": good[:-2],
        "the file ends inside the header of the record at byte 43": good[:43 + 5],
    }
    for message, damaged in cases.items():
        path.write_bytes(damaged)
        seen = []
        with pytest.raises(TFRecordCorruptError, match=message):
            for record in read_records(path):
                seen.append(record)
        assert seen == [b"first", b"second"][: 1 if "21" in message else 2]
        if "header" in message:  # TensorFlow silently reads a file cut inside a header as complete
            assert [r.numpy() for r in tf.data.TFRecordDataset(str(path))] == seen
            continue
        with pytest.raises(tf.errors.DataLossError):  # TensorFlow refuses the same files
            list(tf.data.TFRecordDataset(str(path)))


def _tf_features(raw: bytes):
    """What TensorFlow parses from ``raw``, as parse_example's ``{key: (kind, values)}``."""
    out = {}
    for key, feature in tf.train.Example.FromString(raw).features.feature.items():
        kind = feature.WhichOneof("kind") or ""
        out[key] = (kind.replace("_list", ""), list(getattr(feature, kind).value) if kind else [])
    return out


def test_parse_example_reads_what_tensorflow_reads():
    values = [0, 1, 127, 128, 2**31, 2**63 - 1, -1, -(2**63)]
    built = [
        make_example_bytes(b"\xff\xd8jpeg" * 5000, 4032, 3024, "batch_1/000001.JPG", "123", OBJECTS),
        serialize_example({"z": (INT64, values), "a": (FLOAT, [-0.0, 1e-38, 3.4e38]), "\u00e9": (BYTES, [b"", b"\xff"]),
                           "empty_bytes": (BYTES, []), "empty_int": (INT64, [])}),
        tf.train.Example(features=tf.train.Features(feature={"unset": tf.train.Feature()})).SerializeToString(),
        b"",
    ]
    # Unpacked lists (proto2 writers), fields out of order and an unknown field (number 9, skipped):
    # Example{features{feature{key "k" value{int64_list{1, -2 unpacked}}}, feature{key "f" value{float_list{0.5}}}}}
    int_list = b"\x08\x01" + b"\x08" + bytes([0xFE] + [0xFF] * 8 + [0x01])
    float_list = b"\x0d" + struct.pack("<f", 0.5)
    entry_k = b"\x12" + bytes([len(int_list) + 2]) + b"\x1a" + bytes([len(int_list)]) + int_list + b"\x0a\x01k"
    entry_f = b"\x0a\x01f\x12" + bytes([len(float_list) + 2]) + b"\x12" + bytes([len(float_list)]) + float_list
    features = (b"\x0a" + bytes([len(entry_k)]) + entry_k + b"\x48\x07" + b"\x0a" + bytes([len(entry_f)]) + entry_f)
    built.append(b"\x0a" + bytes([len(features)]) + features)
    for raw in built:
        assert parse_example(raw) == _tf_features(raw)
    assert parse_example(built[-1]) == {"k": ("int64", [1, -2]), "f": ("float", [0.5])}
    assert parse_example(built[2]) == {"unset": ("", [])}
    for broken in (b"\x0a\x05abc", b"\x0b", b"\x0a\x03\x0a\x01\xff"):
        with pytest.raises(ValueError):
            parse_example(broken)
