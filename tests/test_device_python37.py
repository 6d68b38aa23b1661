"""The device runtime must run on the Dev Board's Python 3.7 (Mendel Linux): checked with vermin."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO


def _vermin() -> str:
    exe = Path(sys.executable).with_name("vermin")
    found = str(exe) if exe.exists() else shutil.which("vermin")
    if not found:
        pytest.fail("vermin is not installed: it is in the dev extra (pip install -e '.[dev]')")
    return found


def test_edge_runtime_needs_nothing_newer_than_python_37():
    runtime = REPO / "edge_trash" / "edge_runtime"
    files = sorted(runtime.rglob("*.py"))
    assert len(files) >= 1
    proc = subprocess.run([_vermin(), "-q", "--no-tips", "--violations", "-t=3.7-", "--eval-annotations",
                           str(runtime), str(REPO / "edge_trash" / "__init__.py")],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "", "vermin found code newer than Python 3.7:\n" + proc.stdout
    assert proc.returncode == 0, proc.stderr


def test_vermin_does_catch_newer_syntax(tmp_path):
    """Guard against a vermin invocation that can never fail."""
    bad = tmp_path / "walrus.py"
    bad.write_text("if (n := 3) > 2:\n    print(n)\n")
    proc = subprocess.run([_vermin(), "-q", "--no-tips", "--violations", "-t=3.7-", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert "3.8" in proc.stdout
