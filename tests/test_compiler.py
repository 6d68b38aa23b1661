"""The compiler driver, run against a fake ``edgetpu_compiler`` that replays recorded outputs."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from edge_trash.export.compat import inspect_tflite
from edge_trash.export.compiler import (CORAL_APT_REPO, CompilerNotFoundError, compare_with_prediction,
                                        compile_instructions, find_compiler, run_compiler)
from edge_trash.export.compiler_log import parse_compiler_output

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "compiler"
SHARED = HERE.parents[0].parent / "shared" / "edgetpu"
DEEPLAB = SHARED / "models" / "deeplabv3_mnv2_dm05_pascal_quant.tflite"
DEEPLAB_COMPILED = SHARED / "models" / "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"
LOGS = SHARED / "compiler-logs"

pytestmark = pytest.mark.skipif(not DEEPLAB.is_file(), reason=f"{DEEPLAB} (shared models) not present")


@pytest.fixture()
def fake_compiler(tmp_path, monkeypatch):
    """An executable ``edgetpu_compiler`` in its own folder; returns (path, argv record file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(f"#!{sys.executable}\n" + (FIXTURES / "fake_edgetpu_compiler.py").read_text())
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    argv_file = tmp_path / "argv.txt"
    for name in ("STDOUT", "LOG", "MODEL", "EXIT", "SLEEP"):
        monkeypatch.delenv(f"FAKE_EDGETPU_{name}", raising=False)
    monkeypatch.setenv("FAKE_EDGETPU_ARGV", str(argv_file))
    return exe, argv_file


@pytest.fixture(scope="module")
def deeplab_report():
    return inspect_tflite(DEEPLAB)


def test_success_in_agreement(fake_compiler, deeplab_report, tmp_path, monkeypatch):
    exe, argv_file = fake_compiler
    monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(FIXTURES / "deeplabv3_replay.stdout.txt"))
    monkeypatch.setenv("FAKE_EDGETPU_LOG", str(FIXTURES / "deeplabv3_replay.log"))
    monkeypatch.setenv("FAKE_EDGETPU_MODEL", str(DEEPLAB_COMPILED))
    out = tmp_path / "out"
    outcome = run_compiler(str(exe), DEEPLAB, out, extra_args=("--show_operations",))

    assert argv_file.read_text().splitlines() == [
        "--out_dir", str(out), "--timeout_sec", "180", "--show_operations", str(DEEPLAB)]
    assert outcome.ok and outcome.returncode == 0 and not outcome.timed_out
    assert outcome.compiled_model == out / "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"
    assert outcome.compiled_model.read_bytes() == DEEPLAB_COMPILED.read_bytes()
    assert outcome.log_path == out / "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.log"
    result = outcome.result
    assert (result.total_ops, result.edgetpu_ops, result.cpu_ops) == (72, 64, 8)
    assert len(result.op_rows) == 10  # rows came from the .log file
    assert compare_with_prediction(deeplab_report, result) == []
    # The compiled model the "compiler" wrote shows the same CPU ops as the prediction.
    assert inspect_tflite(outcome.compiled_model).cpu_op_names() == deeplab_report.cpu_op_names()


def test_disagreement_is_listed(fake_compiler, deeplab_report, tmp_path, monkeypatch):
    exe, _ = fake_compiler
    monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(LOGS / "v16_efficientdet.stdout.txt"))
    monkeypatch.setenv("FAKE_EDGETPU_LOG", str(LOGS / "v16_efficientdet_partial.log"))
    outcome = run_compiler(str(exe), DEEPLAB, tmp_path / "out")
    assert outcome.result.success and outcome.returncode == 0
    assert outcome.compiled_model is None and not outcome.ok  # no model was written
    problems = compare_with_prediction(deeplab_report, outcome.result)
    assert problems[:2] == ["Edge TPU ops: compiler 264, predicted 64", "CPU ops: compiler 3, predicted 8"]
    assert "ADD mapped to the Edge TPU: compiler 42, predicted 10" in problems
    assert "CUSTOM on the CPU: compiler 1, predicted 0" in problems
    assert "ARG_MAX on the CPU: compiler 0, predicted 1" in problems


def test_parse_failure(fake_compiler, deeplab_report, tmp_path, monkeypatch):
    exe, _ = fake_compiler
    monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(LOGS / "v16_parse_fail_exp_v2.txt"))
    monkeypatch.setenv("FAKE_EDGETPU_EXIT", "1")
    outcome = run_compiler(str(exe), DEEPLAB, tmp_path / "out")
    assert outcome.returncode == 1 and not outcome.ok and outcome.compiled_model is None
    assert outcome.log_text is None and outcome.log_path is None
    assert outcome.result.parse_failed
    assert (outcome.result.errors[0].op_name, outcome.result.errors[0].op_version) == ("EXP", 2)
    assert compare_with_prediction(deeplab_report, outcome.result) == [
        "the compiler could not parse EXP version 2; the prediction said it parses"]


def test_timeout_kills_the_compiler(fake_compiler, tmp_path, monkeypatch):
    exe, _ = fake_compiler
    monkeypatch.setenv("FAKE_EDGETPU_SLEEP", "20")
    start = time.monotonic()
    outcome = run_compiler(str(exe), DEEPLAB, tmp_path / "out", timeout_s=1, kill_after_s=0.5)
    assert time.monotonic() - start < 10
    assert outcome.timed_out and outcome.returncode is None and not outcome.ok
    assert outcome.result.success is False
    assert [e.kind for e in outcome.result.errors] == ["timeout"]
    assert outcome.result.errors[0].message == (
        "edgetpu_compiler did not finish within 0.5 s and was stopped, with the processes it started; rerun the "
        "export with a larger --compiler-timeout than 1 (seconds: the compiler's own --timeout_sec)")
    assert outcome.command[3:5] == ["--timeout_sec", "1"]


FORKING_COMPILER = """\
import os, sys, time
child = os.fork()
if child == 0:  # like the real compiler's "compilation child process"
    time.sleep(60)
    os._exit(0)
with open(os.environ["FAKE_CHILD_PID"], "w") as f:
    f.write(str(child))
print("Started a compilation timeout timer of 180 seconds.", flush=True)
os.waitpid(child, 0)
"""


@pytest.fixture()
def forking_compiler(tmp_path, monkeypatch):
    """A compiler that forks a child which sleeps 60 s and waits for it; returns (exe, model, child pid file).
    Whatever it leaves running is killed at the end."""
    exe = tmp_path / "edgetpu_compiler"
    exe.write_text(f"#!{sys.executable}\n{FORKING_COMPILER}")
    exe.chmod(0o755)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"not compiled by this fake")
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("FAKE_CHILD_PID", str(pid_file))
    yield exe, model, pid_file
    if pid_file.is_file() and _alive(int(pid_file.read_text())):
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet, e.g. under a PID 1 that does not reap, is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _gone_soon(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_timeout_kills_the_compilers_child_too(forking_compiler, tmp_path):
    exe, model, pid_file = forking_compiler
    start = time.monotonic()
    outcome = run_compiler(str(exe), model, tmp_path / "out", timeout_s=1, kill_after_s=6)  # the fake: 60 s
    assert time.monotonic() - start < 20
    assert outcome.timed_out and outcome.returncode is None and not outcome.ok
    assert outcome.stdout == "Started a compilation timeout timer of 180 seconds.\n"  # printed before the kill
    assert _gone_soon(int(pid_file.read_text())), "the compiler's child outlived the timeout"
    assert outcome.result.errors[-1].message == (
        "edgetpu_compiler did not finish within 6 s and was stopped, with the processes it started; rerun the "
        "export with a larger --compiler-timeout than 1 (seconds: the compiler's own --timeout_sec)")


def test_ctrl_c_while_waiting_kills_the_compiler_and_its_child(forking_compiler, tmp_path):
    exe, model, pid_file = forking_compiler
    stop = threading.Event()

    def press_ctrl_c():  # once the child exists (a loaded machine may take a while to start the fake)
        deadline = time.monotonic() + 30
        while not (pid_file.is_file() and pid_file.read_text().strip()) and time.monotonic() < deadline:
            if stop.wait(0.05):
                return
        os.kill(os.getpid(), signal.SIGINT)

    interrupt = threading.Thread(target=press_ctrl_c, daemon=True)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background runner may ignore SIGINT
    interrupt.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_compiler(str(exe), model, tmp_path / "out", timeout_s=60)
    finally:
        stop.set()
        interrupt.join(5)
        signal.signal(signal.SIGINT, before)
    assert _gone_soon(int(pid_file.read_text())), "the compiler's child outlived Ctrl-C"


def test_the_compilers_own_timeout_names_what_to_do(fake_compiler, tmp_path, monkeypatch):
    exe, _ = fake_compiler
    monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(LOGS / "v16_timeout5_fail.txt"))
    monkeypatch.setenv("FAKE_EDGETPU_EXIT", "1")
    outcome = run_compiler(str(exe), DEEPLAB, tmp_path / "out", timeout_s=5)
    assert not outcome.ok and not outcome.timed_out and outcome.returncode == 1
    assert [(e.kind, e.message) for e in outcome.result.errors] == [(
        "timeout", "Compilation failed! with no other error under a 5 s timeout timer; rerun the export with a "
        "larger --compiler-timeout than 5 (seconds: the compiler's own --timeout_sec)")]


def test_nonzero_exit_is_a_failure_even_with_a_success_message(fake_compiler, tmp_path, monkeypatch):
    exe, _ = fake_compiler
    monkeypatch.setenv("FAKE_EDGETPU_STDOUT", str(FIXTURES / "deeplabv3_replay.stdout.txt"))
    monkeypatch.setenv("FAKE_EDGETPU_MODEL", str(DEEPLAB_COMPILED))
    monkeypatch.setenv("FAKE_EDGETPU_EXIT", "3")
    outcome = run_compiler(str(exe), DEEPLAB, tmp_path / "out")
    assert outcome.returncode == 3 and not outcome.ok
    assert outcome.result.success is False and outcome.compiled_model is None
    assert [(e.kind, e.message) for e in outcome.result.errors] == [
        ("failed", "the compiler exited with status 3")]


def test_missing_model_and_missing_compiler(fake_compiler, tmp_path):
    exe, _ = fake_compiler
    with pytest.raises(FileNotFoundError, match="nope.tflite: no such model file"):
        run_compiler(str(exe), tmp_path / "nope.tflite", tmp_path / "out")
    with pytest.raises(CompilerNotFoundError, match="coral-edgetpu-stable main"):
        run_compiler(str(tmp_path / "no_such_compiler"), DEEPLAB, tmp_path / "out")


def test_find_compiler(fake_compiler, tmp_path, monkeypatch):
    exe, _ = fake_compiler
    assert find_compiler(str(exe)) == str(exe.resolve())
    monkeypatch.setenv("PATH", str(exe.parent))
    assert find_compiler(None) == str(exe)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert find_compiler(None) is None
    assert find_compiler(str(tmp_path / "missing")) is None
    not_executable = tmp_path / "plain_file"
    not_executable.write_text("")
    assert find_compiler(str(not_executable)) is None


def test_compile_instructions_name_the_repo_package_and_command(tmp_path):
    model = tmp_path / "my models" / "det.tflite"
    text = compile_instructions(model)
    assert CORAL_APT_REPO == "https://packages.cloud.google.com/apt coral-edgetpu-stable main"
    assert CORAL_APT_REPO in text
    assert "sudo apt-get install edgetpu-compiler" in text
    assert "x86-64 Linux" in text
    assert f"edgetpu_compiler --out_dir '{model.parent}' --show_operations '{model}'" in text
    # one compile, the export's, which lists the model in the manifest: compiling by hand is the fallback
    assert ("Then, on an x86-64 Linux machine with edgetpu_compiler, rerun the export with --edgetpu (and --compiler "
            "PATH where it is not on PATH): it compiles the model and lists it in the bundle's manifest.") in text
    assert "the service warns that the bundle's manifest does not cover it" in text


def test_compare_flags_a_wrong_parse_prediction(tmp_path):
    from edge_trash.export.compat import CompatReport

    unparsable = CompatReport(source="m.tflite", ops=[], compiler_can_parse=False, compiled=False,
                              parameter_bytes=0,
                              compiler_error="Didn't find op for builtin opcode 'X' version '9'")
    ok = parse_compiler_output((FIXTURES / "deeplabv3_replay.stdout.txt").read_text())
    problems = compare_with_prediction(unparsable, ok)
    assert problems[0] == ("the compiler parsed the model; the prediction said it cannot "
                           "(Didn't find op for builtin opcode 'X' version '9')")
