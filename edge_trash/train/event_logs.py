"""TensorBoard event files of a resumed run, cut back to the step the run resumes from.

A run killed after its last checkpoint has already logged the steps between that checkpoint and
the kill; the resume trains those steps again and logs them a second time. TensorBoard then
draws each such curve twice, doubling back on itself (TF2's summary writers have no "purge"
of their own). ``edge-trash train --resume`` therefore drops, before it writes anything, every
event past the checkpoint's step from the run's event files, so each step is logged once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List


def trim_event_files(logs_dir: Path, last_step: int) -> int:
    """Drop every summary event after ``last_step`` from the event files under ``logs_dir``;
    return how many were dropped.

    A file is rewritten (temp file, then rename) only when it holds such an event, ends in a record
    cut short by the kill, or holds a record that is no event (both left out); the events up to
    ``last_step`` keep their order and bytes.
    """
    import tensorflow as tf
    from google.protobuf.message import DecodeError
    from tensorflow.core.util import event_pb2

    dropped = 0
    for path in sorted(Path(logs_dir).rglob("*tfevents*")):
        if not path.is_file():
            continue
        kept: List[bytes] = []
        cut = 0
        torn = False  # the kill cut the last record short, or a record is no event: rewrite without it
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                data = record.numpy()
                try:
                    event = event_pb2.Event.FromString(data)
                except DecodeError:  # a record that is no event (its checksum matched by chance): no reader wants it
                    torn = True
                    continue
                if event.step > last_step and not event.HasField("file_version"):
                    cut += 1
                else:
                    kept.append(data)
        except tf.errors.DataLossError:  # the kill cut the last record short
            torn = True
        if not cut and not torn:
            continue
        temp = path.with_name(".event-trim.tmp")  # no "tfevents" in its name: TensorBoard never reads it
        with tf.io.TFRecordWriter(str(temp)) as out:
            for data in kept:
                out.write(data)
        os.replace(temp, path)
        dropped += cut
    return dropped
