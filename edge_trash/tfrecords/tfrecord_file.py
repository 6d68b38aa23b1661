"""Write and read TFRecord files without TensorFlow (``tf.io.TFRecordWriter``'s format, byte for byte).

Each record is framed as TensorFlow's ``core/lib/io/record_writer.cc`` frames it::

    uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)

(little-endian; ``HEADER`` and ``FOOTER`` here, which the training pipeline's reader uses
too). The CRC32C comes from ``google-crc32c``'s C extension, which checks
10 MB in about 2 ms.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO, Iterator, Optional, Union

HEADER = struct.Struct("<QI")  # record length, masked CRC32C of the length
FOOTER = struct.Struct("<I")  # masked CRC32C of the data
_MASK_DELTA = 0xA282EAD8


def _crc32c(data: bytes) -> int:
    try:
        import google_crc32c
    except ImportError:
        raise ImportError("writing TFRecords needs the google-crc32c package: "
                          "pip install google-crc32c (it comes with edge-trash's 'host' extra)") from None
    return google_crc32c.value(data)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C of ``data`` (rotate right by 15, add a constant)."""
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def header_checks_out(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) starts as a TFRecord file does: a record's length and that
    length's masked CRC32C (:data:`HEADER`), the check :func:`read_records` makes of each record (inline there:
    it has the header unpacked already)."""
    if len(head) < HEADER.size:
        return False
    _, length_crc = HEADER.unpack(head[:HEADER.size])
    return masked_crc32c(head[:8]) == length_crc


class TFRecordWriter:
    """Append records to one TFRecord file (uncompressed), like ``tf.io.TFRecordWriter``."""

    def __init__(self, path: Union[str, Path]) -> None:
        _crc32c(b"")  # a missing google-crc32c fails here, before the file is created
        self._fh: Optional[BinaryIO] = open(path, "wb")

    def write(self, record: bytes) -> None:
        """Append one serialised record."""
        if self._fh is None:
            raise ValueError("TFRecordWriter.write() after close()")
        length = struct.pack("<Q", len(record))
        self._fh.write(HEADER.pack(len(record), masked_crc32c(length)))
        self._fh.write(record)
        self._fh.write(FOOTER.pack(masked_crc32c(record)))

    def close(self) -> None:
        """Flush and close the file (idempotent)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "TFRecordWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TFRecordCorruptError(ValueError):
    """A TFRecord file whose framing or checksums are wrong (cut off, or changed on disk);
    the message gives the byte offset of the record."""


def read_records(path: Union[str, Path]) -> Iterator[bytes]:
    """Each record of an uncompressed TFRecord file, in order, with both checksums
    verified (what ``tf.data.TFRecordDataset`` yields). Raises
    :class:`TFRecordCorruptError` at the first bad record; the ones before it are yielded."""
    with open(path, "rb") as fh:
        offset = 0
        while True:
            header = fh.read(HEADER.size)
            if not header:
                return
            if len(header) < HEADER.size:
                raise TFRecordCorruptError(f"the file ends inside the header of the record at byte {offset}")
            length, length_crc = HEADER.unpack(header)
            if masked_crc32c(header[:8]) != length_crc:
                raise TFRecordCorruptError(f"the length of the record at byte {offset} fails its checksum")
            data = fh.read(length)
            footer = fh.read(FOOTER.size)
            if len(data) < length or len(footer) < FOOTER.size:
                raise TFRecordCorruptError(f"the file ends inside the record at byte {offset}")
            if masked_crc32c(data) != FOOTER.unpack(footer)[0]:
                raise TFRecordCorruptError(f"the data of the record at byte {offset} fails its checksum")
            yield data
            offset += HEADER.size + length + FOOTER.size
