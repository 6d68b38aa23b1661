"""build-tfrecords and analyze under the conditions of the machine they run on: folders that cannot be
entered, names too long for the file system, a legacy locale, file systems without locks, SIGTERM, a
closed stderr, a log file for a terminal, paths with spaces, more --workers than CPUs, and another
tool's records in --out."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from edge_trash.cli import cli
from edge_trash.tfrecords.build import BuildError, BuildOptions, build_tfrecords

REPO = Path(__file__).resolve().parents[1]


def _dataset(root: Path, file_names, size=(64, 48)) -> Path:
    """Photos ``file_names`` under ``root/images`` (those that a file system can name), one 'can' box each."""
    images = root / "images"
    for k, name in enumerate(file_names):
        path = images / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", size, (200, 40, 5 * k)).save(path, format="JPEG")  # no two alike: copies share a split
        except OSError:  # a name too long to create: it stays missing
            pass
    ids = range(1, len(file_names) + 1)
    ann = root / "annotations.json"
    ann.write_text(json.dumps({
        "images": [{"id": i, "file_name": n, "width": size[0], "height": size[1]} for i, n in zip(ids, file_names)],
        "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20]} for i in ids],
        "categories": [{"id": 1, "name": "can"}]}, ensure_ascii=False), encoding="utf-8")
    return ann


def _run(args, **kwargs):
    return CliRunner().invoke(cli, [str(a) for a in args], **kwargs)


# ----------------------------------------------------------------------------- inputs that cannot be looked at

def test_a_file_name_too_long_for_the_file_system_skips_that_image_only(tmp_path):
    # "batch_1/aaaa...(300).jpg": is_file() raised ENAMETOOLONG, and the whole build stopped with "cannot write
    # ... free space or choose another --out"; analyze stopped too.
    long_name = "batch_1/" + "a" * 300 + ".jpg"
    ann = _dataset(tmp_path, ["batch_1/1.jpg", long_name, "batch_1/2.jpg"])
    result = _run(["build-tfrecords", "--annotations", ann, "--images", tmp_path / "images", "--out", tmp_path / "out",
                   "--quiet", "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["images_written"] == 2
    assert [s["reason"] for s in report["images_skipped"]] == [
        f"cannot read {tmp_path / 'images' / long_name}: File name too long"]
    assert "skipped images by reason: 1x cannot read (File name too long)" in result.output
    result = _run(["analyze", "--annotations", ann, "--images", tmp_path / "images", "--out", tmp_path / "an",
                   "--quiet", "--no-plots"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "an" / "stats.json").read_text())
    assert [u["image_id"] for u in stats["annotations"]["brightness"]["unreadable"]] == [2]


def test_a_folder_that_cannot_be_entered_is_a_reason_not_the_end_of_the_build(tmp_path, monkeypatch):
    # Python 3.11's Path.is_file() raises PermissionError inside a folder without x permission (root ignores
    # permissions, so the file system's answer is played here).
    from edge_trash.tfrecords.build_cli import build_os_error
    from edge_trash.tfrecords.image_paths import ImagePaths

    locked = tmp_path / "images" / "locked"
    real_is_file = Path.is_file

    def is_file(self):
        if locked in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    paths = ImagePaths(tmp_path / "images")
    assert paths.resolve("locked/1.jpg") == (locked / "1.jpg", None)
    assert build_os_error(PermissionError(errno.EACCES, "Permission denied", str(locked / "1.jpg")),
                          tmp_path / "out") == f"cannot read {locked / '1.jpg'}: Permission denied"
    assert build_os_error(OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out" / "x")),
                          tmp_path / "out") == (
        f"cannot write {tmp_path / 'out' / 'x'}: Read-only file system. Nothing in {tmp_path / 'out'} was changed "
        "(the new files are renamed into place together, once all are complete); choose another --out, and run "
        "again")
    # a file-size limit (FAT32, ulimit -f) hit the spool of a small build: not a full disk ("free space" misled)
    assert build_os_error(OSError(errno.EFBIG, "File too large", str(tmp_path / "out" / ".records.spool.tmp")),
                          tmp_path / "out").endswith(
        "; a file may not grow that large here (a FAT32 drive holds files under 4 GiB; `ulimit -f` sets a limit): "
        "the records wait in one temp file about the output's size, so choose an --out on another file system, and "
        "run again")


@pytest.mark.parametrize("command", ["build-tfrecords", "analyze"])
def test_an_annotation_file_that_cannot_be_looked_at_gets_a_message(tmp_path, command, monkeypatch):
    # The "reading N MB of annotations" check ran stat() outside any try: a traceback.
    ann = tmp_path / ("a" * 300 + ".json")
    result = _run([command, "--annotations", ann, "--out", tmp_path / "out"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"Error: {ann}: ") and "File name too long" in result.output


def test_names_in_utf8_are_found_under_a_legacy_locale(tmp_path):
    # With Python's file system encoding ASCII (LC_ALL=C, PYTHONUTF8=0) or Latin-1, 'Фото/3.jpg' was "an escaped
    # lone surrogate" and 'café/1.jpg' "file not found", although both are on disk, named in UTF-8.
    ann = _dataset(tmp_path, ["café/1.jpg", "Фото/3.jpg", "plain/2.jpg"])
    code = ("import json, sys\n"
            "from edge_trash.tfrecords.build import BuildOptions, build_tfrecords\n"
            f"r = build_tfrecords(BuildOptions(annotations={str(ann)!r}, images={str(tmp_path / 'images')!r}, "
            f"out={str(tmp_path / 'out')!r}, val_fraction=0, test_fraction=0))\n"
            "print(sys.getfilesystemencoding(), r['images_written'], json.dumps(r['images_skipped']))\n")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 2)[1:] == ["3", "[]\n"]
    assert done.stdout.split(" ")[0] in ("ascii", "utf-8")  # utf-8 where the interpreter forces UTF-8 mode
    # --images one folder too high: the hint names the folder file_name is relative to (found as spelt on disk)
    code = code.replace(repr(str(tmp_path / "images")), repr(str(tmp_path))).replace(
        "r['images_written']", "r['images_written'], r['images_folder_hint']['folders']")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split(" ", 1)[1] == f"3 {[str(tmp_path / 'images')]} []\n"


def test_macos_and_windows_zip_names_are_found_alike_under_a_legacy_locale(tmp_path):
    """Under LC_ALL=C without UTF-8 mode, a name stored in NFD (macOS) and one in cp1252 (a Windows zip) were
    "file not found" although found under a UTF-8 locale, and the notes printed escaped bytes: the same build now
    gives the same records, split and notes under both."""
    import unicodedata

    ann = _dataset(tmp_path, ["crème.jpg", "café2.jpg", "plain.jpg", "other.jpg"])
    images = tmp_path / "images"
    os.rename(os.fsencode(images / "crème.jpg"), os.path.join(os.fsencode(images),
                                                                unicodedata.normalize("NFD", "crème.jpg").encode()))
    os.rename(os.fsencode(images / "café2.jpg"), os.path.join(os.fsencode(images), "café2.jpg".encode("cp1252")))
    code = ("import json, sys\n"
            "from edge_trash.tfrecords.build import BuildOptions, build_tfrecords\n"
            f"r = build_tfrecords(BuildOptions(annotations={str(ann)!r}, images={str(images)!r}, "
            "out=sys.argv[1], val_fraction=0.25, test_fraction=0.25))\n"
            "print(json.dumps([r['images_written'], r['image_notes']]))\n")
    runs = []
    for name, env in (("utf8", dict(os.environ, LC_ALL="C.UTF-8")),
                      ("legacy", dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0"))):
        done = subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], env=env, capture_output=True,
                              text=True, cwd=REPO)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    assert runs[0] == runs[1]
    written, notes = runs[0]
    assert written == 4
    assert [n["notes"][0].split(" under ")[0] for n in notes] == [
        f"file_name 'crème.jpg' not found as given; read {unicodedata.normalize('NFD', 'crème.jpg')!r} (the same "
        "letters, one of them in Unicode NFD form as macOS writes names)",
        "file_name 'café2.jpg' not found as given; read 'caf\\udce92.jpg' (its name on disk is not UTF-8 but a legacy "
        "encoding such as cp437 or cp1252, as zips made on Windows store names; 'unzip -O cp437' or convmv renames "
        "such files)"]
    for f in ("splits.json", "train-00000-of-00001.tfrecord", "val-00000-of-00001.tfrecord"):
        assert (tmp_path / "utf8" / f).read_bytes() == (tmp_path / "legacy" / f).read_bytes()


# ----------------------------------------------------------------------------- --out

def test_a_file_system_without_locks_still_builds(tmp_path, monkeypatch):
    # NFS without lockd answers flock with ENOLCK: every build was refused as "another build-tfrecords is writing".
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ann = _dataset(tmp_path, ["1.jpg", "2.jpg"])
    report = build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "images", out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["images_written"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "label_map.pbtxt", "labels.txt", "report.json", "splits.json", "train-00000-of-00001.tfrecord"]


def test_another_tools_records_in_out_are_never_deleted(tmp_path):
    # Model Garden's converter names its shards train-00000-of-00004.tfrecord too: a build into their folder
    # deleted them as "stale", said only in report.json.
    ann = _dataset(tmp_path, ["1.jpg", "2.jpg"])
    out = tmp_path / "data"
    out.mkdir()
    theirs = {f"train-0000{i}-of-00004.tfrecord": os.urandom(100) for i in range(4)}
    for name, data in theirs.items():
        (out / name).write_bytes(data)
    options = BuildOptions(annotations=ann, images=tmp_path / "images", out=out, val_fraction=0, test_fraction=0)
    with pytest.raises(BuildError) as caught:
        build_tfrecords(options)
    assert str(caught.value) == (
        f"--out {out} holds TFRecords no build-tfrecords report there lists (train-00000-of-00004.tfrecord, "
        "train-00001-of-00004.tfrecord, train-00002-of-00004.tfrecord and 1 more): another tool's, or a build whose "
        "report.json is gone; this build would replace or delete them: move them away, or choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == theirs
    # our own earlier build is replaced, and the summary says so
    mine = tmp_path / "mine"
    build_tfrecords(BuildOptions(**dict(vars(options), out=mine, shard_size=1)))
    result = _run(["build-tfrecords", "--annotations", ann, "--images", tmp_path / "images", "--out", mine,
                   "--quiet", "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert f"to {mine}, replacing the earlier build there (2 of its shards removed) in " in result.output
    assert sorted(p.name for p in mine.glob("*.tfrecord")) == ["train-00000-of-00001.tfrecord"]


def test_a_datasets_own_labels_and_reports_in_out_are_never_replaced(tmp_path):
    # Shards of another tool were kept, but the four files a build writes beside them were replaced silently when
    # --out was a dataset's folder holding its own labels.txt, splits.json, report.json and label_map.pbtxt.
    ann = _dataset(tmp_path, ["1.jpg", "2.jpg"])
    out = tmp_path / "ds"
    out.mkdir()
    theirs = {"labels.txt": b"my precious class list\n", "splits.json": b"{}", "report.json": b'{"mine": 1}',
              "label_map.pbtxt": b"item {}"}
    for name, data in theirs.items():
        (out / name).write_bytes(data)
    options = BuildOptions(annotations=ann, images=tmp_path / "images", out=out, val_fraction=0, test_fraction=0)
    with pytest.raises(BuildError) as caught:
        build_tfrecords(options)
    assert str(caught.value) == (
        f"--out {out} holds labels.txt, label_map.pbtxt, splits.json and report.json, with no build-tfrecords "
        "report.json beside them: another tool's files, or a build's whose report.json is gone; this build would "
        "replace them: move them away, or choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == theirs
    (out / "report.json").unlink()
    with pytest.raises(BuildError, match=r"holds labels\.txt, label_map\.pbtxt and splits\.json, with no"):
        build_tfrecords(options)
    # a build's own outputs are replaced by the next build, as before
    for name in theirs:
        (out / name).unlink(missing_ok=True)
    assert build_tfrecords(options)["images_written"] == 2
    (out / "labels.txt").write_text("edited\n")
    assert build_tfrecords(options)["images_written"] == 2
    assert (out / "labels.txt").read_text() == "can\n"


def test_an_out_link_to_nothing_is_named_as_such(tmp_path):
    # "cannot write out: File exists ... choose another --out": mkdir on a link whose folder is gone.
    ann = _dataset(tmp_path, ["1.jpg"])
    (tmp_path / "out").symlink_to(tmp_path / "gone")
    result = _run(["build-tfrecords", "--annotations", ann, "--images", tmp_path / "images", "--out", tmp_path / "out"])
    assert (result.exit_code, result.output) == (1, (
        f"Error: --out {tmp_path / 'out'} is a symbolic link to {tmp_path / 'gone'}, which does not exist: create "
        "that folder, or choose another --out\n"))


def test_next_commands_quote_paths_with_spaces(tmp_path):
    # "--tfrecords my out --out my out/analysis | edge-trash train --data my out": pasted, the wrong command.
    root = tmp_path / "my data"
    ann = _dataset(root, [f"{i}.jpg" for i in range(8)])
    out = tmp_path / "my out"
    result = _run(["build-tfrecords", "--annotations", ann, "--images", root / "images", "--out", out, "--quiet",
                   "--val-fraction", "0.25", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        f"next: edge-trash analyze --annotations '{ann}' --images '{root / 'images'}' --tfrecords '{out}' "
        f"--out '{out / 'analysis'}'  |  edge-trash train --data '{out}' --out runs/ssd")
    result = _run(["analyze", "--annotations", ann, "--images", root / "images", "--out", tmp_path / "an", "--quiet",
                   "--no-plots"])
    assert result.output.splitlines()[-1] == (
        f"next: edge-trash build-tfrecords --annotations '{ann}' --images '{root / 'images'}' --out data/")


def test_more_workers_than_cpus_are_cut_to_the_cpus(monkeypatch):
    # --workers 64 on two CPUs: 65 processes, 10x slower and 2.7 GB.
    import multiprocessing

    from edge_trash.tfrecords import workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert workers.worker_count(None) == (2, "")
    assert workers.worker_count(2) == (2, "")
    assert workers.worker_count(64) == (2, "note: --workers 64: this process may use 2 CPUs, so 2 workers (each "
                                           "more only adds its start-up time and memory)")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(multiprocessing, "get_context", lambda kind: pytest.fail("a pool on one CPU"))
    assert list(workers.ordered_map(abs, [-1, -2, -3], 64)) == [1, 2, 3]


# ----------------------------------------------------------------------------- the terminal and signals

def test_progress_bars_fit_where_stderr_goes(monkeypatch):
    # stderr closed (2>&-): tqdm raised inside the build, which exited 1 with no message anywhere; in a CI log the
    # bar wrote ten updates a second.
    import io

    from edge_trash import terminal

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", None)
    assert terminal.progress_options() == {"disable": True}
    assert terminal.progress_bar(range(3), total=3).disable
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert terminal.progress_options() == {"mininterval": 30.0}
    # train's bar sets its loss every few steps: each set_postfix redrew it, 2400 draws in a demo log
    bar = terminal.progress_bar(total=100, desc="train")
    for step in range(100):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    assert log.getvalue().count("train:") == 1  # the first draw only, until 30 s pass
    bar.close()
    assert log.getvalue().count("train:") == 2 and "100/100" in log.getvalue() and "loss=0.010" in log.getvalue()
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert terminal.progress_options() == {}
    assert terminal.progress_bar(total=3, disable=True).disable


@pytest.mark.parametrize("stop, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_cleans_up_as_ctrl_c_does(tmp_path, stop, status):
    """Both exit 128 + the signal, as a shell reports a process it stopped (Ctrl-C exited 1, as an error does)."""
    # kill / timeout / docker stop mid-build: the spool (the size of the output) and the lock stayed in --out,
    # and the workers wrote BrokenPipeError tracebacks.
    ann = _dataset(tmp_path, [f"{i}.jpg" for i in range(40)])
    out = tmp_path / "out"
    code = ("import sys, time\n"
            "import edge_trash.tfrecords.build as b\n"
            "real = b.convert_image\n"
            "def slow(job):\n"
            "    time.sleep(0.1)\n"
            "    return real(job)\n"
            "b.convert_image = slow\n"
            "import signal\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, not a background job\n"
            "from edge_trash.cli import main\n"
            f"sys.argv = ['edge-trash', 'build-tfrecords', '--annotations', {str(ann)!r}, '--images', "
            f"{str(tmp_path / 'images')!r}, '--out', {str(out)!r}, '--workers', '1', '--quiet']\n"
            "main()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while not (out / ".records.spool.tmp").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(stop)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status and "Aborted!" in stderr and "Traceback" not in stderr, stderr
    assert not out.exists()  # a new --out: nothing left, not even the folder


def test_a_full_stdout_is_a_message_not_a_traceback(tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "edge_trash", "sample-data", "--out", str(tmp_path / "s"),
                               "--num-images", "20"], stdout=full, stderr=subprocess.PIPE, text=True, cwd=REPO)
    assert (done.returncode, done.stderr) == (1, "edge-trash: cannot write the output: No space left on device\n")


def test_analyze_flags_keep_a_file_names_line_break_on_one_line():
    # A file name with a line break split its flag over two lines of the summary.
    from edge_trash.tfrecords.analyze_cli import summarize

    stats = {"annotations": None, "tfrecords": None, "flags": [
        {"where": "annotations", "kind": "dark_images", "message": "1 image: a\nb.jpg (3.0), caf\udce9\t.jpg"}]}
    assert summarize(stats, Path("o"), 1.0).splitlines() == [
        "flags (1):", "  [annotations] dark_images: 1 image: a\\nb.jpg (3.0), caf\\udce9\\t.jpg",
        "analyze: wrote report.md, stats.json and 0 plots (0 kB) to o in 1.0s"]


# ----------------------------------------------------------------------------- moving a build into place

def _full_disk_at(n: int):
    """An ``os.replace`` whose ``n``-th call fails as on a full disk."""
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == n:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    return replace


def test_a_rename_that_fails_midway_is_said_refused_by_training_and_finished_by_the_next_build(tmp_path,
                                                                                               monkeypatch):
    # A rename can fail too (a full directory): the commit stopped after two new shards, beside the earlier build's
    # five and its report; the CLI said "Nothing in out was changed", the next build refused the folder as another
    # tool's, and training read both builds' train shards.
    import edge_trash.tfrecords.build as build_mod
    from edge_trash.tfrecords.split_layout import DataSplitError, training_splits

    ann = _dataset(tmp_path, [f"{i}.jpg" for i in range(12)])
    out = tmp_path / "out"
    options = dict(annotations=ann, images=tmp_path / "images", out=out, test_fraction=0, val_fraction=0.25)
    build_tfrecords(BuildOptions(shard_size=2, **options))
    real_replace = os.replace
    replace = _full_disk_at(3)

    monkeypatch.setattr(build_mod.os, "replace", replace)
    result = _run(["build-tfrecords", "--annotations", ann, "--images", tmp_path / "images", "--out", out,
                   "--quiet", "--val-fraction", "0.25", "--test-fraction", "0", "--shard-size", "4"])
    assert (result.exit_code, result.output) == (1, (
        f"Error: the new build was only partly moved into {out} (No space left on device): run the same command "
        "again to finish it; until then training refuses the folder\n"))
    journal = json.loads((out / ".build-tfrecords.commit.json").read_text())
    # the files not yet moved wait for the next build to move them first (not deleted: it would be left half done)
    assert sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == sorted(
        f".{name}.tmp" for name in journal["new"][2:])
    with pytest.raises(DataSplitError, match="was stopped while moving its files into place"):
        training_splits(out)
    from edge_trash.tfrecords.analyze import AnalyzeError, analyze

    with pytest.raises(AnalyzeError, match=f"^--tfrecords {re.escape(str(out))}: a build-tfrecords was stopped while "
                                           "moving its files into place, so the folder holds shards of two builds: "
                                           r"run that build again \(it finishes the move first\)$"):
        analyze(tfrecords=out, out=tmp_path / "analysis", plots=False)  # it read both builds' shards as one
    monkeypatch.setattr(build_mod.os, "replace", real_replace)
    report = build_tfrecords(BuildOptions(shard_size=4, **options))  # not refused as another tool's shards
    assert sorted(p.name for p in out.glob("*.tfrecord")) == sorted(s["file"] for s in report["shards"])
    assert not (out / ".build-tfrecords.commit.json").exists() and training_splits(out) == ("train", "val")


def test_ctrl_c_and_sigterm_wait_while_files_are_renamed():
    from edge_trash.atomic_files import signals_held as _signals_held

    seen = []
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a command gets it
    try:
        _rename_under_ctrl_c(_signals_held, seen)
    finally:
        signal.signal(signal.SIGINT, before)
    assert seen == ["renamed"]


def _rename_under_ctrl_c(held, seen):
    with pytest.raises(KeyboardInterrupt):
        with held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            seen.append("renamed")  # still running: the signal waits


def test_the_lock_of_a_removed_lock_file_is_not_taken(tmp_path):
    # A opened the lock file, B finished and removed it, C made a new one: A's flock on the removed file succeeded
    # and A and C both ran, each deleting the other's temp files as stale.
    import fcntl

    from edge_trash.tfrecords.build import _OutLock

    first = _OutLock(tmp_path)
    first.take()
    early = open(tmp_path / ".build-tfrecords.lock", "a+")  # another build opens the file, then waits
    first.release()  # the file is removed and unlocked
    third = _OutLock(tmp_path)
    third.take()  # a new file, locked
    fcntl.flock(early, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the removed one can be locked ...
    with pytest.raises(BuildError, match=f"another build-tfrecords \\(process {os.getpid()}\\) is writing"):
        _OutLock(tmp_path).take()  # ... but a build checks it locked the file that is there
    early.close()
    third.release()


def test_only_our_own_temp_files_are_cleaned_from_out(tmp_path):
    # --out may be a folder with other files: every hidden *.tmp in it was deleted as a killed build's leftover.
    ann = _dataset(tmp_path, ["1.jpg", "2.jpg"])
    out = tmp_path / "images"  # the photos' own folder
    (out / ".editor-autosave.tmp").write_text("keep")
    (out / ".train-00000-of-00001.tfrecord.tmp").write_text("ours, from a killed build")
    (out / ".records.spool.tmp").write_text("ours too")
    build_tfrecords(BuildOptions(annotations=ann, images=out, out=out, val_fraction=0, test_fraction=0))
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".editor-autosave.tmp"]


def test_a_containers_cpu_quota_limits_the_workers(tmp_path, monkeypatch):
    from edge_trash.tfrecords import workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    quota = tmp_path / "cpu.max"
    monkeypatch.setattr(workers, "CGROUP_CPU_MAX", str(quota))
    for text, cpus in (("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000\n", 1), ("max 100000\n", 64)):
        quota.write_text(text)
        assert workers.usable_cpus() == cpus, text
    quota.unlink()
    assert workers.usable_cpus() == 64


def test_the_clis_max_pixels_default_is_the_librarys():
    from edge_trash.tfrecords.analyze_cli import analyze
    from edge_trash.tfrecords.build_cli import build_tfrecords as build_command
    from edge_trash.tfrecords.images import DEFAULT_MAX_PIXELS

    for command in (analyze, build_command):
        assert next(p.default for p in command.params if p.name == "max_pixels") == DEFAULT_MAX_PIXELS


def test_reasons_are_counted_by_kind_whatever_the_path_holds():
    # A folder named "2024: beach" once made "cannot read (beach/1.jpg)" a kind of its own in the summary.
    from edge_trash.tfrecords.build import reasons_by_kind

    reasons = ["cannot read /d/2024: beach/1.jpg: Permission denied",
               "cannot read /d/plain/2.jpg: Permission denied",
               "cannot read /d/a; b: c/3.jpg: Permission denied; file_name 'x: 3.jpg' not found as given; read 'a'",
               "cannot open /d/2024: beach/4.jpg: [Errno 13] Permission denied: '/d/2024: beach/4.jpg'",
               "cannot open /d/2024: beach/5.jpg: image file is truncated (3 bytes not processed)",
               "cannot open /d/6.jpg: image file is truncated (41 bytes not processed)",
               "cannot read /d/7: x.jpg: [Errno 5] Input/output error: '/d/7: x.jpg'"]
    assert reasons_by_kind(reasons) == ("3x cannot read (Permission denied); 2x cannot open (image file is truncated "
                                        "(… bytes not processed)); 1x cannot open (Permission denied); "
                                        "1x cannot read (Input/output error)")
    # past the six commonest kinds, how many more (the summary hid 5 of 12 skipped images without a word)
    assert reasons_by_kind(reasons, top=2, where="in images_skipped in report.json") == (
        "3x cannot read (Permission denied); 2x cannot open (image file is truncated (… bytes not processed)); "
        "2 more kinds (2x) in images_skipped in report.json")
    # every kind shown: the console still says where the files are named (it once left that out)
    assert reasons_by_kind(reasons[:1], top=1, where="in x") == "1x cannot read (Permission denied); each listed in x"
    assert reasons_by_kind(reasons[:1], top=1) == "1x cannot read (Permission denied)"
    # a merged file's category id no category of its file has: the summary once cut it to "unknown category_id '3"
    assert reasons_by_kind(["unknown category_id '3 (not in the categories of a (1)/r.json)' (not in 'categories')",
                            "unknown category_id 99 (not in 'categories')"]) == (
        "1x unknown category_id 3 (not in its file's categories); 1x unknown category_id 99")


def test_a_long_reason_kind_is_cut_between_words():
    """A reason kind cut mid-phrase at 70 characters ("... and the file ") is cut between words."""
    from edge_trash.tfrecords.build import reason_kind

    kind = reason_kind("decoded size 100x75 is the JSON size 75x100 turned a quarter turn, and the file has no EXIF "
                       "orientation tag: was it stripped after annotation?")
    assert kind == "decoded size … is the JSON size … turned a quarter turn, and the file …"
    assert reason_kind("file is empty (0 bytes)") == "file is empty"


def test_records_a_build_is_writing_are_not_read_until_it_ends(tmp_path):
    """analyze --tfrecords read a folder while a build was renaming its files into place (some old, some new)."""
    from edge_trash.tfrecords.analyze import AnalyzeError, analyze
    from edge_trash.tfrecords.build import _OutLock
    from edge_trash.tfrecords.split_layout import DataSplitError, training_splits

    ann = _dataset(tmp_path, [f"{i}.jpg" for i in range(8)])
    out = tmp_path / "out"
    build_tfrecords(BuildOptions(annotations=ann, images=tmp_path / "images", out=out, test_fraction=0,
                                 val_fraction=0.25))
    lock = _OutLock(out)
    lock.take()  # as a running build holds it
    try:
        with pytest.raises(AnalyzeError, match=f"^--tfrecords {re.escape(str(out))}: a build-tfrecords is writing "
                                               "there now: wait for it to finish$"):
            analyze(tfrecords=out, out=tmp_path / "analysis", plots=False)
        with pytest.raises(DataSplitError, match="a build-tfrecords is writing there now"):
            training_splits(out)
    finally:
        lock.release()
    assert training_splits(out) == ("train", "val")
    assert analyze(tfrecords=out, out=tmp_path / "analysis", plots=False)["tfrecords"]["splits"]["train"]["images"]


def test_files_written_together_leave_no_temporary_file_when_a_rename_fails(tmp_path, monkeypatch):
    from edge_trash import atomic_files

    (tmp_path / "stats.json").write_text("old")
    monkeypatch.setattr(atomic_files.os, "replace", _full_disk_at(2))
    with pytest.raises(OSError):
        atomic_files.write_files_together(tmp_path, {"a.png": b"a", "stats.json": b"new", "report.md": b"r"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "stats.json"]  # no .tmp left behind
    assert (tmp_path / "stats.json").read_text() == "old"


def test_a_name_two_files_match_only_ignoring_case_is_not_guessed(tmp_path):
    """'Img_1.jpg' beside IMG_1.jpg and img_1.jpg (a case-sensitive disk): the first by sort order was read
    silently, perhaps another photo under these boxes; now neither, with both named and the fix."""
    from edge_trash.tfrecords.build import reason_kind
    from edge_trash.tfrecords.image_paths import ImagePaths

    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    for name, colour in (("IMG_1.jpg", (200, 0, 0)), ("img_1.jpg", (0, 0, 200)), ("sub/Only.jpg", (0, 200, 0))):
        Image.new("RGB", (32, 24), colour).save(images / name)
    paths = ImagePaths(images)
    assert paths.resolve("IMG_1.jpg") == (images / "IMG_1.jpg", None)  # the exact name is always read
    assert paths.resolve("Img_1.jpg") == (images / "Img_1.jpg", (
        "2 files under the images folder differ from it only in case or Unicode form ('IMG_1.jpg', 'img_1.jpg'): "
        "which one it means is unknowable; write file_name as that file's exact name, or rename the other"))
    assert paths.resolve("SUB/only.JPG")[0] == images / "sub" / "Only.jpg"  # one match ignoring case: read
    coco = {"images": [{"id": 1, "file_name": "Img_1.jpg", "width": 32, "height": 24},
                       {"id": 2, "file_name": "sub/only.jpg", "width": 32, "height": 24}],
            "annotations": [{"id": k, "image_id": k, "category_id": 1, "bbox": [2, 2, 8, 8]} for k in (1, 2)],
            "categories": [{"id": 1, "name": "can"}]}
    (tmp_path / "a.json").write_text(json.dumps(coco))
    report = build_tfrecords(BuildOptions(annotations=tmp_path / "a.json", images=images, out=tmp_path / "out",
                                          val_fraction=0, test_fraction=0))
    assert report["images_written"] == 1
    assert [s["image_id"] for s in report["images_skipped"]] == [1]
    assert report["images_skipped"][0]["reason"].startswith(f"file not found: {images / 'Img_1.jpg'}; 2 files")
    assert reason_kind(report["images_skipped"][0]["reason"]) == (
        "file not found (several files differ from it only in case)")
