"""The hard-example queue under faults: a folder removed after an export, a full disk, files deleted
by hand, and a second run whose frame numbers start again at 0 (a fresh event log)."""

import errno
import json
import os
import shutil
import time

import numpy as np
import pytest

from edge_trash.edge_runtime import files, hard_examples
from edge_trash.edge_runtime.geometry import BBox, Detection
from edge_trash.edge_runtime.hard_examples import HardExampleQueue
from edge_trash.edge_runtime.queue_export import build_queue_coco

LABELS = ["bottle", "can", "carton"]
IMAGE = np.zeros((32, 64, 3), np.uint8)
PPM_BYTES = len(b"P6\n64 32\n255\n") + 32 * 64 * 3
UNCERTAIN = [Detection(0, "bottle", 0.45, BBox(1, 1, 9, 9))]


def queue(directory, **kwargs):
    return HardExampleQueue(str(directory), LABELS, min_interval_s=0.0, use_pillow=False, **kwargs)


def on_disk(directory):
    """{name: size} of the examples (everything but labels.json)."""
    return {n: os.path.getsize(os.path.join(str(directory), n)) for n in os.listdir(str(directory))
            if n != "labels.json"}


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def names(*stems):
    return sorted(s + ext for s in stems for ext in (".json", ".ppm"))


def test_the_writer_recreates_a_removed_folder_and_goes_on(tmp_path, caplog):
    directory = tmp_path / "hard"
    q = queue(directory)
    q.start_writer()
    q.maybe_save(IMAGE, 1, UNCERTAIN)
    wait_for(lambda: q.saved == 1)
    shutil.rmtree(str(directory))  # the operator clears the queue after an export
    q.maybe_save(IMAGE, 2, UNCERTAIN)
    q.maybe_save(IMAGE, 3, UNCERTAIN)
    wait_for(lambda: q.saved == 3)
    assert q._writer.is_alive() and q.failed == 0
    assert sorted(on_disk(directory)) == names("000000000002", "000000000003")
    with open(str(directory / "labels.json")) as f:
        assert json.load(f) == LABELS
    assert q.bytes_used == sum(on_disk(directory).values())
    q.close()
    assert [r.getMessage() for r in caplog.records if r.name == hard_examples.__name__] == [
        "hard-example queue %s: the folder was removed; re-created it (0 examples left on disk)" % directory]


def test_a_full_disk_costs_one_example_leaves_no_partial_files_and_the_writer_goes_on(tmp_path, monkeypatch,
                                                                                       caplog):
    directory = tmp_path / "hard"
    q = queue(directory)
    q.start_writer()
    q.maybe_save(IMAGE, 1, UNCERTAIN)
    wait_for(lambda: q.saved == 1)
    real_replace = os.replace
    refuse = [3]

    def full_disk(src, dst):  # the image is written, then its sidecar cannot be: ENOSPC
        if refuse[0] and dst.endswith(".json"):
            refuse[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)
    monkeypatch.setattr(os, "replace", full_disk)
    for seq in (2, 3, 4):
        q.maybe_save(IMAGE, seq, UNCERTAIN)
        wait_for(lambda: q.failed == seq - 1)
    assert q._writer.is_alive()
    assert sorted(os.listdir(str(directory))) == names("000000000001") + ["labels.json"]  # no temporary file, no orphan
    q.maybe_save(IMAGE, 5, UNCERTAIN)  # space is back
    wait_for(lambda: q.saved == 2)
    q.close()
    assert (q.saved, q.failed) == (2, 3)
    assert sorted(on_disk(directory)) == names("000000000001", "000000000005")
    assert q.bytes_used == sum(on_disk(directory).values())
    messages = [r.getMessage() for r in caplog.records if r.name == hard_examples.__name__]
    assert messages == [  # rate-limited: once when the failures began, once when saving worked again
        "hard-example queue %s: could not save frame 2 (OSError: [Errno 28] No space left on device); 1 example(s) "
        "lost since the last report, 1 in all; the service goes on: free space on that disk or lower "
        "hard_examples.quota_mb in sort.yaml" % directory,
        "hard-example queue %s: saving works again (2 more example(s) lost, 3 in all)" % directory]


def test_without_the_writer_a_failed_save_returns_none_instead_of_raising(tmp_path, monkeypatch):
    directory = tmp_path / "hard"
    q = queue(directory)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(files.tempfile, "mkstemp", full_disk)
    assert q.maybe_save(IMAGE, 1, UNCERTAIN) is None
    assert (q.saved, q.failed, q.bytes_used) == (0, 1, 0)
    monkeypatch.undo()
    assert q.maybe_save(IMAGE, 2, UNCERTAIN) == str(directory / "000000000002.json")


def test_the_quota_counts_only_files_still_on_disk(tmp_path):
    directory = tmp_path / "hard"
    q = queue(directory)
    for seq in (1, 2, 3):
        q.maybe_save(IMAGE, seq, UNCERTAIN, now=1000.0 + seq)  # same-length sidecars: every example is `one`
    one = on_disk(directory)["000000000001.json"] + PPM_BYTES
    q.quota_bytes = 3 * one + one // 2  # room for three examples
    for stem in ("000000000001", "000000000002"):  # deleted by hand while the service runs
        for ext in (".json", ".ppm"):
            os.unlink(str(directory / (stem + ext)))
    # 4 counted > 3.5: evicting 1 finds its files gone -> the folder is re-read (2 left)
    q.maybe_save(IMAGE, 4, UNCERTAIN, now=1004.0)
    assert q.evicted == 0  # nothing was deleted by the quota
    assert sorted(on_disk(directory)) == names("000000000003", "000000000004")
    assert q.bytes_used == sum(on_disk(directory).values()) == 2 * one
    for seq in (5, 6):
        q.maybe_save(IMAGE, seq, UNCERTAIN, now=1000.0 + seq)
    assert q.evicted == 1 and sorted(on_disk(directory)) == names("000000000004", "000000000005", "000000000006")
    assert q.bytes_used == sum(on_disk(directory).values()) == 3 * one


@pytest.mark.parametrize("writer", [False, True])
def test_a_second_run_with_the_same_seqs_never_overwrites(tmp_path, writer):
    directory = tmp_path / "hard"
    first = queue(directory)
    for seq in (1, 2, 3):
        first.maybe_save(IMAGE, seq, UNCERTAIN, now=100.0 + seq)
    first.close()
    time.sleep(0.02)  # the second run's sidecars are newer (oldest-first order is by modification time)
    second = queue(directory)  # a fresh event log: frames are numbered from 0 again
    if writer:
        second.start_writer()
    for i, seq in enumerate((2, 3, 4, 3)):
        second.maybe_save(IMAGE, seq, UNCERTAIN, now=201.0 + i)
    second.close()
    assert sorted(on_disk(directory)) == names("000000000001", "000000000002", "000000000003", "000000000002-1",
                                               "000000000003-1", "000000000004", "000000000003-2")
    assert second.saved == 4 and second.bytes_used == sum(on_disk(directory).values()) == 7 * PPM_BYTES + sum(
        size for name, size in on_disk(directory).items() if name.endswith(".json"))
    with open(str(directory / "000000000003-2.json")) as f:
        record = json.load(f)
    assert (record["seq"], record["t"], record["file"]) == (3, 204.0, "000000000003-2.ppm")
    with open(str(directory / "000000000003.json")) as f:
        assert json.load(f)["t"] == 103.0  # the first run's example is untouched
    assert list(second._entries)[:3] == ["000000000001", "000000000002", "000000000003"]  # oldest first
    coco, files = build_queue_coco(str(directory))
    assert len(coco["images"]) == 7 and len({name for _, name in files}) == 7
    third = queue(directory)  # a restart counts what is there, once
    assert third.bytes_used == second.bytes_used and len(third._entries) == 7
