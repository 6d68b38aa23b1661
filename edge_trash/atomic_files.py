"""Write a file so that readers see the old content or the new, never a half-written one.

The data goes to a hidden temporary file in the same folder, which is renamed over the
target when complete; on any failure (a full disk, Ctrl-C) the temporary file is
removed. Host side only: the device runtime keeps its own Python 3.7 copy.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Union


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: Union[str, Path], data: bytes) -> None:
    """Write ``data`` to ``path`` through ``.NAME.*.tmp`` and ``os.replace``, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Union[str, Path], text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


_WRITE_ONLY_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def os_error_message(exc: OSError, out: Union[str, Path]) -> str:
    """One line for an ``OSError`` a command hit: ``cannot write`` when the file is its
    output ``out``, under it or a hidden temporary beside it (a full disk, a read-only
    or vanished folder), with the fix; ``cannot read`` for any other file; the error's
    own text when it names no file (one our code raised with its own message), unless it
    is one only writing raises (a full disk or quota, a read-only file system: a ``write``
    names no file), which names ``out``."""
    if not exc.filename:
        if exc.errno in _WRITE_ONLY_ERRORS:
            return f"cannot write into {out}: {exc.strerror}; free space or choose another --out, and run again"
        return str(exc)
    where, out = Path(exc.filename).absolute(), Path(out).absolute()
    writing = (where == out or out in where.parents
               or (where.parent == out.parent and where.name.startswith(f".{out.name}")))
    reason = exc.strerror or str(exc)
    if writing:
        return f"cannot write {exc.filename}: {reason}; free space or choose another --out, and run again"
    return f"cannot read {exc.filename}: {reason}"
