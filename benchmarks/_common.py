"""Helpers every benchmark shares: a plain-text table, an atomic JSON file, the machine it ran on."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence


def print_table(title: str, header: Sequence[str], rows: List[Sequence[Any]]) -> None:
    """Print ``rows`` under ``header`` as an aligned text table (floats with 3 significant digits)."""
    def cell(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    table = [[str(h) for h in header]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    print(f"\n{title}")
    for n, row in enumerate(table):
        print("  ".join(v.rjust(w) if n and i else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths))))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def write_json(path: "str | os.PathLike", result: Dict[str, Any]) -> Path:
    """Write ``result`` (plus the machine description) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({**result, "machine": machine()}, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def machine() -> Dict[str, Any]:
    """CPU count, load and versions: enough to tell two runs' machines apart."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "load_avg_1m_at_end": round(load[0], 2) if load else None,
            "platform": platform.platform(), "python": sys.version.split()[0]}
