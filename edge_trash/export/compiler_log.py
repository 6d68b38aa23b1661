"""Parse what ``edgetpu_compiler`` prints (stdout) and writes (``<model>_edgetpu.log``).

Handles compiler versions 14.1 to 16.0: the summary lines, the op table (``-s`` on stdout or the
``.log`` file) and the failures (op version it cannot parse, model not quantized, internal error,
unresolved custom op, timeout). Sizes are printed with 2 decimals, so byte counts parsed from
``KiB`` / ``MiB`` are rounded to the nearest byte of that printed value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

STATUS_MAPPED = "Mapped to Edge TPU"

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
_SIZE = r"([0-9]+(?:\.[0-9]+)?)\s*(B|KiB|MiB|GiB)"
_TABLE_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$")
_TABLE_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$")


@dataclass(frozen=True)
class OpRow:
    """One row of the compiler's op table: ``Operator  Count  Status``."""

    name: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        """True for "Mapped to Edge TPU"; every other status means the op runs on the CPU."""
        return self.status == STATUS_MAPPED


@dataclass(frozen=True)
class CompilerError:
    """One failure the compiler reported."""

    kind: str  # op_version | not_parsed | not_quantized | internal_error | unresolved_custom_op
    #            | node_prepare | failed | timeout
    message: str
    op_name: Optional[str] = None
    op_version: Optional[int] = None


@dataclass
class CompilerResult:
    """Everything one compiler run reported. Fields the output did not contain stay None."""

    compiler_version: Optional[str] = None
    success: bool = False
    compile_time_ms: Optional[int] = None
    input_model: Optional[str] = None
    input_size_bytes: Optional[int] = None
    output_model: Optional[str] = None
    output_size_bytes: Optional[int] = None
    on_chip_used_bytes: Optional[int] = None
    on_chip_remaining_bytes: Optional[int] = None
    off_chip_streaming_bytes: Optional[int] = None
    edgetpu_subgraphs: Optional[int] = None
    total_ops: Optional[int] = None
    edgetpu_ops: Optional[int] = None
    cpu_ops: Optional[int] = None
    operation_log: Optional[str] = None
    timeout_s: Optional[int] = None
    op_rows: List[OpRow] = field(default_factory=list)
    errors: List[CompilerError] = field(default_factory=list)

    @property
    def parse_failed(self) -> bool:
        """True when the compiler could not parse the model at all."""
        return any(e.kind in ("op_version", "not_parsed") for e in self.errors)

    def op_counts(self) -> Dict[Tuple[str, bool], int]:
        """Op count per (op name, mapped) from the op table (several rows of one op are summed)."""
        counts: Dict[Tuple[str, bool], int] = {}
        for row in self.op_rows:
            key = (row.name, row.mapped)
            counts[key] = counts.get(key, 0) + row.count
        return counts


def parse_size(text: str) -> int:
    """Bytes from a compiler size such as ``7.37MiB``, ``961.05KiB`` or ``0.00B``."""
    match = re.fullmatch(r"\s*" + _SIZE + r"\s*", text)
    if not match:
        raise ValueError(f"not a compiler size: {text!r} (expected a number followed by B, KiB or MiB)")
    return round(float(match.group(1)) * _UNITS[match.group(2)])


_SUMMARY: List[Tuple[str, "re.Pattern[str]", str]] = [
    ("compiler_version", re.compile(r"Edge TPU Compiler version (\S+)"), "str"),
    ("compile_time_ms", re.compile(r"Model compiled successfully in (\d+) ms"), "int"),
    ("input_model", re.compile(r"^Input model: (.+?)\s*$"), "str"),
    ("input_size_bytes", re.compile(r"^Input size: " + _SIZE), "size"),
    ("output_model", re.compile(r"^Output model: (.+?)\s*$"), "str"),
    ("output_size_bytes", re.compile(r"^Output size: " + _SIZE), "size"),
    ("on_chip_used_bytes", re.compile(r"On-chip memory used for caching model parameters: " + _SIZE), "size"),
    ("on_chip_remaining_bytes",
     re.compile(r"On-chip memory remaining for caching model parameters: " + _SIZE), "size"),
    ("off_chip_streaming_bytes",
     re.compile(r"Off-chip memory used for streaming uncached model parameters: " + _SIZE), "size"),
    ("edgetpu_subgraphs", re.compile(r"Number of Edge TPU subgraphs: (\d+)"), "int"),
    ("total_ops", re.compile(r"Total number of operations: (\d+)"), "int"),
    ("operation_log", re.compile(r"^Operation log: (.+?)\s*$"), "str"),
    ("edgetpu_ops", re.compile(r"Number of operations that will run on Edge TPU: (\d+)"), "int"),
    ("cpu_ops", re.compile(r"Number of operations that will run on CPU: (\d+)"), "int"),
    ("timeout_s", re.compile(r"Started a compilation timeout timer of (\d+) seconds"), "int"),
    # The .log file names the models on "Input:" / "Output:" lines.
    ("input_model", re.compile(r"^Input: (.+?)\s*$"), "str"),
    ("output_model", re.compile(r"^Output: (.+?)\s*$"), "str"),
    ("input_model", re.compile(r"^Invalid model: (.+?)\s*$"), "str"),
]

_ERRORS: List[Tuple[str, "re.Pattern[str]"]] = [
    ("op_version", re.compile(r"Didn't find op for builtin opcode '([^']+)' version '(\d+)'")),
    ("not_parsed", re.compile(r"^Model could not be parsed")),
    ("not_quantized", re.compile(r"^Model not quantized")),
    ("internal_error", re.compile(r"^Internal compiler error")),
    ("unresolved_custom_op", re.compile(r"Encountered unresolved custom op: ([^.\s]+)")),
    ("node_prepare", re.compile(r"Node number \d+ \((.+?)\) failed to prepare")),
    ("failed", re.compile(r"^Compilation failed: (.+?)\s*$")),
    ("timeout", re.compile(r"timed out|timeout (?:expired|exceeded|reached)", re.IGNORECASE)),
]


def parse_compiler_output(stdout: str, log_text: Optional[str] = None) -> CompilerResult:
    """Parse the compiler's stdout and, when given, the text of its ``.log`` file.

    The op table comes from the ``.log`` file when it has one, else from stdout (``-s``).
    ``success`` is True when the compiler said "Compilation succeeded!", or (compiler 15 and
    older, which did not print that line) "Model compiled successfully" without a failure line,
    or when only a ``.log`` file with an op table is given.
    """
    result = CompilerResult()
    stdout_rows = _scan(stdout or "", result)
    log_rows = _scan(log_text or "", result) if log_text else []
    result.op_rows = log_rows or stdout_rows
    text = f"{stdout or ''}\n{log_text or ''}"
    failed = re.search(r"^Compilation failed!", text, re.MULTILINE) is not None
    succeeded = re.search(r"^Compilation succeeded!", text, re.MULTILINE) is not None
    # The .log file is written only by a compilation that went through, so a log alone means success.
    log_only = not (stdout or "").strip() and bool(log_rows)
    result.success = not result.errors and not failed and (
        succeeded or result.compile_time_ms is not None or log_only)
    if failed and not result.errors:
        # "Compilation failed!" with no reason: with a timeout timer set, the timer is what stopped it.
        if result.timeout_s is not None:
            result.errors.append(CompilerError(
                "timeout", f"Compilation failed! with no other error under a {result.timeout_s} s timeout "
                "timer: raise --timeout_sec"))
        else:
            result.errors.append(CompilerError("failed", "Compilation failed! (no reason printed)"))
    return result


def _scan(text: str, result: CompilerResult) -> List[OpRow]:
    rows: List[OpRow] = []
    in_table = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if _TABLE_HEADER.match(line):
            in_table = True
            continue
        if in_table:
            if not line.strip():
                continue
            row = _TABLE_ROW.match(line)
            if row:
                rows.append(OpRow(row.group(1), int(row.group(2)), row.group(3)))
                continue
            in_table = False
        _scan_summary(line, result)
        _scan_errors(line, result)
    return rows


def _scan_summary(line: str, result: CompilerResult) -> None:
    for attr, pattern, kind in _SUMMARY:
        match = pattern.search(line)
        if not match or getattr(result, attr) is not None:
            continue
        if kind == "int":
            setattr(result, attr, int(match.group(1)))
        elif kind == "size":
            setattr(result, attr, round(float(match.group(1)) * _UNITS[match.group(2)]))
        else:
            setattr(result, attr, match.group(1))
        return


def _scan_errors(line: str, result: CompilerResult) -> None:
    for kind, pattern in _ERRORS:
        match = pattern.search(line)
        if not match:
            continue
        message = line.strip().removeprefix("ERROR: ").strip()
        if kind == "op_version":
            result.errors.append(CompilerError(kind, message, match.group(1), int(match.group(2))))
        elif kind in ("unresolved_custom_op", "node_prepare"):
            result.errors.append(CompilerError(kind, message, match.group(1)))
        else:
            result.errors.append(CompilerError(kind, message))
        return
