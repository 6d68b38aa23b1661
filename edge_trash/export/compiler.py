"""Drive ``edgetpu_compiler``: find it, run it safely, parse its output, compare with the prediction."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from edge_trash.export.compat import STATUS_NOT_QUANTIZED, CompatReport
from edge_trash.export.compiler_log import CompilerError, CompilerResult, parse_compiler_output

COMPILER_NAME = "edgetpu_compiler"
CORAL_APT_REPO = "https://packages.cloud.google.com/apt coral-edgetpu-stable main"
DEFAULT_KILL_GRACE_S = 30.0
REAP_TIMEOUT_S = 10.0  # after the kill: how long to wait for the output pipes to close


class CompilerNotFoundError(FileNotFoundError):
    """No runnable ``edgetpu_compiler``; the message says how to install it."""


@dataclass
class CompileOutcome:
    """One compiler run: the command, what it printed, the parsed result and the compiled model."""

    command: List[str]
    returncode: Optional[int]  # None when the run was killed at the timeout
    stdout: str
    stderr: str
    log_text: Optional[str]
    result: CompilerResult
    compiled_model: Optional[Path]
    log_path: Optional[Path]
    timed_out: bool
    duration_s: float

    @property
    def ok(self) -> bool:
        """True when the compiler exited 0, reported success and wrote the compiled model."""
        return (self.returncode == 0 and self.result.success and not self.timed_out
                and self.compiled_model is not None)


def find_compiler(explicit: Optional[str] = None) -> Optional[str]:
    """The compiler to run: ``explicit`` (a path or a command name) when given, else ``edgetpu_compiler``
    on PATH. Returns None when nothing runnable is found.
    """
    if explicit:
        path = Path(explicit).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.resolve())
        return shutil.which(explicit)
    return shutil.which(COMPILER_NAME)


def compiled_paths(model_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike]) -> Tuple[Path, Path]:
    """Where the compiler writes ``<stem>_edgetpu.tflite`` and ``<stem>_edgetpu.log`` for a model."""
    stem = Path(model_path).stem
    out = Path(out_dir)
    return out / f"{stem}_edgetpu.tflite", out / f"{stem}_edgetpu.log"


def run_compiler(compiler: str, model_path: Union[str, os.PathLike], out_dir: Union[str, os.PathLike],
                 timeout_s: int = 180, extra_args: Sequence[str] = (),
                 kill_after_s: Optional[float] = None) -> CompileOutcome:
    """Run ``compiler --out_dir OUT --timeout_sec T [extra_args] MODEL`` (no shell) and parse the result.

    The compiler's own timer is ``timeout_s``; if it has not finished ``kill_after_s`` seconds after
    start (default ``timeout_s + 30``), it is killed, which is reported as a ``timeout`` error. The
    compiler runs in a session of its own and is killed with its whole process group: the real one
    forks a "compilation child process" that would otherwise run on. The same happens when the wait
    is interrupted (Ctrl-C, or SIGTERM where the CLI turns it into KeyboardInterrupt), which then
    propagates. Reads ``<stem>_edgetpu.log`` from ``out_dir``. Raises ``CompilerNotFoundError`` when
    ``compiler`` cannot be executed and ``FileNotFoundError`` when the model does not exist.
    """
    model = Path(model_path)
    if not model.is_file():
        raise FileNotFoundError(f"{model}: no such model file to compile.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    command = [compiler, "--out_dir", str(out), "--timeout_sec", str(int(timeout_s)),
               *[str(a) for a in extra_args], str(model)]
    limit = kill_after_s if kill_after_s is not None else timeout_s + DEFAULT_KILL_GRACE_S
    start = time.monotonic()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise CompilerNotFoundError(f"Cannot run {compiler!r}: {exc}.\n{compile_instructions(model)}") from exc
    stdout, stderr, timed_out = _wait(proc, limit)
    returncode: Optional[int] = None if timed_out else proc.returncode
    duration = time.monotonic() - start

    compiled, log_path = compiled_paths(model, out)
    log_text = log_path.read_text(errors="replace") if log_path.is_file() else None
    result = parse_compiler_output(f"{stdout}\n{stderr}", log_text)
    result.errors = [_with_timeout_advice(e, timeout_s) for e in result.errors]
    if timed_out:
        result.success = False
        result.errors.append(CompilerError(
            "timeout", f"{Path(compiler).name} did not finish within {limit:g} s and was stopped, with the "
            f"processes it started; {timeout_advice(timeout_s)}"))
    elif returncode != 0 and result.success:
        result.success = False
        result.errors.append(CompilerError("failed", f"the compiler exited with status {returncode}"))
    if result.output_model and not compiled.is_file():
        named = out / Path(result.output_model).name
        compiled = named if named.is_file() else compiled
    return CompileOutcome(
        command=command, returncode=returncode, stdout=stdout, stderr=stderr, log_text=log_text,
        result=result, compiled_model=compiled if compiled.is_file() and result.success else None,
        log_path=log_path if log_text is not None else None, timed_out=timed_out, duration_s=duration)


def timeout_advice(timeout_s: int) -> str:
    """What to do when the compiler ran out of time: give it more (``export --compiler-timeout`` sets the
    compiler's own ``--timeout_sec``)."""
    return (f"rerun the export with a larger --compiler-timeout than {int(timeout_s)} (seconds: the compiler's own "
            "--timeout_sec)")


def _with_timeout_advice(error: CompilerError, timeout_s: int) -> CompilerError:
    # The parser's own advice ("raise --timeout_sec") names a flag export does not expose.
    if error.kind != "timeout":
        return error
    message = error.message.replace(": raise --timeout_sec", "")
    return dataclasses.replace(error, message=f"{message}; {timeout_advice(timeout_s)}")


def _wait(proc: "subprocess.Popen[str]", limit: float) -> Tuple[str, str, bool]:
    """``(stdout, stderr, timed_out)`` of ``proc``, killed with its process group after ``limit`` seconds."""
    try:
        stdout, stderr = proc.communicate(timeout=limit)
        return stdout, stderr, False
    except subprocess.TimeoutExpired:
        stdout, stderr = _kill_group(proc)
        return stdout, stderr, True
    except BaseException:  # Ctrl-C or SIGTERM while waiting: stop the compiler too, then let it propagate
        _kill_group(proc)
        raise


def _kill_group(proc: "subprocess.Popen[str]") -> Tuple[str, str]:
    """Kill ``proc``'s process group (its session: the compiler and the child it forks), reap it and
    return what it printed. A process that left the group and keeps the pipes open is not waited for."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is gone already (a zombie leader alone may refuse the signal)
    try:
        return proc.communicate(timeout=REAP_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()
        return _text(exc.stdout), _text(exc.stderr)


def compare_with_prediction(report: CompatReport, result: CompilerResult) -> List[str]:
    """Where the compiler disagreed with ``inspect``'s prediction; an empty list when they agree.

    Compares: whether the model parsed, the Edge TPU / CPU op counts, and per op name how many ops
    mapped and how many did not (from the op table, when the compiler printed one).
    """
    problems: List[str] = []
    if result.parse_failed and report.compiler_can_parse:
        bad = next((e for e in result.errors if e.kind == "op_version"), None)
        what = f"{bad.op_name} version {bad.op_version}" if bad and bad.op_name else "the model"
        problems.append(f"the compiler could not parse {what}; the prediction said it parses")
    if not result.parse_failed and not report.compiler_can_parse and result.success:
        problems.append(f"the compiler parsed the model; the prediction said it cannot "
                        f"({report.compiler_error})")
    not_quantized = any(e.kind == "not_quantized" for e in result.errors)
    if not_quantized and report.compiler_error != STATUS_NOT_QUANTIZED:
        problems.append("the compiler said 'Model not quantized'; the prediction did not expect it")
    if report.compiler_error and report.compiler_can_parse and result.success:
        problems.append(f"the compiler succeeded; the prediction said it fails ({report.compiler_error})")
    if result.edgetpu_ops is not None and result.edgetpu_ops != report.edgetpu_ops:
        problems.append(f"Edge TPU ops: compiler {result.edgetpu_ops}, predicted {report.edgetpu_ops}")
    if result.cpu_ops is not None and result.cpu_ops != report.cpu_ops:
        problems.append(f"CPU ops: compiler {result.cpu_ops}, predicted {report.cpu_ops}")
    if result.op_rows:
        actual = result.op_counts()
        predicted = Counter((op.table_name, op.on_edgetpu) for op in report.ops)
        for name in sorted({n for n, _ in actual} | {n for n, _ in predicted}):
            for mapped in (True, False):
                got, want = actual.get((name, mapped), 0), predicted.get((name, mapped), 0)
                if got != want:
                    where = "mapped to the Edge TPU" if mapped else "on the CPU"
                    problems.append(f"{name} {where}: compiler {got}, predicted {want}")
    return problems


# what to do with a bundle's model when this machine has no compiler: the export compiles it and lists it in the
# manifest, so compiling by hand first would be work twice (and the service warns of a file its manifest lacks)
RECOMPILE_IN_EXPORT = (f"on an x86-64 Linux machine with {COMPILER_NAME}, rerun the export with --edgetpu (and "
                       "--compiler PATH where it is not on PATH): it compiles the model and lists it in the bundle's "
                       "manifest")


def compile_command(model_path: Union[str, os.PathLike], out_dir: Optional[str] = None) -> str:
    """The compiler command line for this model, quoted for a shell (output beside it by default)."""
    model = Path(model_path)
    out = out_dir or str(model.parent)
    return " ".join(shlex.quote(a) for a in (COMPILER_NAME, "--out_dir", out, "--show_operations", str(model)))


def compile_instructions(model_path: Union[str, os.PathLike], out_dir: Optional[str] = None) -> str:
    """The message shown when no compiler is found: how to install it and the command for this model."""
    command = compile_command(model_path, out_dir)
    return (
        f"{COMPILER_NAME} was not found. It exists for x86-64 Linux only (no ARM build, so not on the "
        "Dev Board). On Debian/Ubuntu x86-64, install Coral's apt repository and the package "
        "edgetpu-compiler:\n"
        "  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | "
        "sudo gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg\n"
        '  echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] '
        f'{CORAL_APT_REPO}" | sudo tee /etc/apt/sources.list.d/coral-edgetpu.list\n'
        "  sudo apt-get update && sudo apt-get install edgetpu-compiler\n"
        f"On macOS, Windows or ARM, run it in an x86-64 Linux container or VM. Then, {RECOMPILE_IN_EXPORT}. "
        f"(Compiled by hand instead, with\n  {command}\nthe model runs, but the service warns that the bundle's "
        "manifest does not cover it.)")


def _text(value: Union[str, bytes, None]) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
