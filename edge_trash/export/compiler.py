"""Drive ``edgetpu_compiler``: find it, run it safely, parse its output, compare with the prediction."""

from __future__ import annotations

import os
import shlex
import shutil
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

    The compiler's own timer is ``timeout_s``; the process is killed ``kill_after_s`` seconds after
    start (default ``timeout_s + 30``) if it has not exited, which is reported as a ``timeout`` error.
    Reads ``<stem>_edgetpu.log`` from ``out_dir``. Raises ``CompilerNotFoundError`` when ``compiler``
    cannot be executed and ``FileNotFoundError`` when the model does not exist.
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
    timed_out = False
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=limit, check=False,
                              stdin=subprocess.DEVNULL)
        returncode: Optional[int] = proc.returncode
        stdout, stderr = proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        timed_out, returncode = True, None
        stdout, stderr = _text(exc.stdout), _text(exc.stderr)
    except (FileNotFoundError, PermissionError, OSError) as exc:
        raise CompilerNotFoundError(f"Cannot run {compiler!r}: {exc}.\n{compile_instructions(model)}") from exc
    duration = time.monotonic() - start

    compiled, log_path = compiled_paths(model, out)
    log_text = log_path.read_text(errors="replace") if log_path.is_file() else None
    result = parse_compiler_output(f"{stdout}\n{stderr}", log_text)
    if timed_out:
        result.success = False
        result.errors.append(CompilerError(
            "timeout", f"{Path(compiler).name} did not finish within {limit:g} s and was stopped; "
            "raise the timeout for large models"))
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
        "On macOS, Windows or ARM, run it in an x86-64 Linux container or VM. Then compile this model "
        f"with:\n  {command}")


def _text(value: Union[str, bytes, None]) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value
