"""A resumed run's TensorBoard logs hold each step once: the events past its checkpoint are dropped."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple


def logged_scalars(folder: Path) -> List[Tuple[int, str, float]]:
    import tensorflow as tf

    found = []
    for path in sorted(folder.rglob("*tfevents*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                found.append((event.step, value.tag, round(float(tf.make_ndarray(value.tensor)), 3)))
    return found


def _write(folder: Path, steps, value: float) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for step in steps:
            tf.summary.scalar("train/loss", value + step, step=step)
    writer.close()


def test_events_past_the_checkpoint_are_dropped_and_the_rest_kept_in_order(tmp_path):
    from edge_trash.train.event_logs import trim_event_files

    _write(tmp_path / "logs" / "train", range(1, 7), 0.5)
    _write(tmp_path / "logs" / "val", [2, 4, 6], 0.25)
    assert trim_event_files(tmp_path / "logs", 3) == 5  # train steps 4, 5, 6; val steps 4, 6
    assert logged_scalars(tmp_path / "logs" / "train") == [(1, "train/loss", 1.5), (2, "train/loss", 2.5),
                                                    (3, "train/loss", 3.5)]
    assert logged_scalars(tmp_path / "logs" / "val") == [(2, "train/loss", 2.25)]
    assert sorted(p.name for p in (tmp_path / "logs").rglob("*") if p.is_file() and "tfevents" not in p.name) == []
    # Nothing past step 3 is left: a second trim changes nothing.
    assert trim_event_files(tmp_path / "logs", 3) == 0


def test_a_record_cut_short_by_the_kill_is_dropped_and_the_file_stays_readable(tmp_path):
    from edge_trash.train.event_logs import trim_event_files

    _write(tmp_path / "train", [1, 2], 0.0)
    path = next(tmp_path.rglob("*tfevents*"))
    whole = path.read_bytes()
    path.write_bytes(whole + whole[-30:-5])  # the start of a record the kill did not finish
    assert trim_event_files(tmp_path, 5) == 0
    assert path.read_bytes() == whole
    assert logged_scalars(tmp_path) == [(1, "train/loss", 1.0), (2, "train/loss", 2.0)]


def test_a_record_that_is_no_event_is_dropped_not_a_traceback(tmp_path):
    import tensorflow as tf

    from edge_trash.train.event_logs import trim_event_files

    _write(tmp_path / "train", [1, 2, 3], 0.0)
    path = next(tmp_path.rglob("*tfevents*"))
    with tf.io.TFRecordWriter(str(tmp_path / "extra")) as out:
        out.write(b"\xff\xff\xff not a protobuf")
    path.write_bytes(path.read_bytes() + (tmp_path / "extra").read_bytes())
    (tmp_path / "extra").unlink()
    assert trim_event_files(tmp_path, 2) == 1
    assert [step for step, _, _ in logged_scalars(tmp_path / "train")] == [1, 2]
