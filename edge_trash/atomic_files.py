"""Write a file so that readers see the old content or the new, never a half-written one.

The data goes to a hidden temporary file in the same folder, which is renamed over the
target when complete; on any failure (a full disk, Ctrl-C) the temporary file is
removed. Host side only: the device runtime keeps its own Python 3.7 copy.
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Union


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


@contextmanager
def signals_held(deliver: bool = True) -> Iterator[List[int]]:
    """Within, SIGINT and SIGTERM wait: each is noted (in the list yielded) and delivered on leaving, so a
    rename loop is never cut short (Python runs signal handlers in the main thread, whichever thread the
    signal hits); with ``deliver`` False it is only noted: the work it would have stopped is already done."""
    import signal
    import threading

    received: List[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received and deliver:
        signal.raise_signal(received[0])  # now, to the handler that was there (Ctrl-C: KeyboardInterrupt)


def write_files_together(folder: Union[str, Path], files: Dict[str, bytes], remove: Sequence[str] = ()) -> None:
    """Write ``files`` (name -> bytes) into ``folder`` as one set: each under a hidden temporary name first, then
    all renamed into place (and ``remove`` deleted) with Ctrl-C and SIGTERM held, so an interrupted run leaves
    the earlier set whole, never new files beside old ones. A failure removes the temporary files; only a
    rename that fails midway (a full or vanished folder) leaves a mixed set, with the error raised."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    try:
        for name, data in files.items():
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
            written.append(Path(tmp))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o666 & ~_umask())
    except BaseException:
        for tmp in written:
            tmp.unlink(missing_ok=True)
        raise
    with signals_held(deliver=False):  # once all is moved the run's work is done: a stop then ends nothing
        try:
            for tmp, name in zip(written, files):
                os.replace(tmp, folder / name)
        except BaseException:  # a rename failed midway: the files not moved go (the set is then mixed: said)
            for tmp in written:
                tmp.unlink(missing_ok=True)
            raise
        for name in remove:
            (folder / name).unlink(missing_ok=True)


_WRITE_ONLY_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def check_can_create(folder: Union[str, Path]) -> None:
    """Raise the ``OSError`` (naming ``folder``) that making ``folder`` and writing into it would raise, without
    making it: a file where a folder of its path should be, or a folder this user may not write in. A command
    calls it before its long work and makes the folder only to write, so a failed run leaves none behind."""
    folder = Path(folder)
    if folder.is_symlink() and not folder.exists():  # mkdir would refuse it, after the work
        raise FileNotFoundError(errno.ENOENT, f"a symbolic link to {os.readlink(folder)}, which does not exist",
                                str(folder))
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(folder))


def _write_fix(code: Optional[int]) -> str:
    """What to do about an error writing the output: free space for a full disk, a writable folder for a
    permission or a read-only file system ("free space" there sent users looking for space they had)."""
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose an --out you can write to, or let this user write there"
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "free space or choose another --out"
    return "choose another --out"


def os_error_message(exc: OSError, out: Union[str, Path]) -> str:
    """One line for an ``OSError`` a command hit: ``cannot write`` when the file is its
    output ``out``, under it or a hidden temporary beside it (a full disk, a read-only
    or vanished folder), with the fix; ``cannot read`` for any other file; the error's
    own text when it names no file (one our code raised with its own message), unless it
    is one only writing raises (a full disk or quota, a read-only file system: a ``write``
    names no file), which names ``out``."""
    if not exc.filename:
        if exc.errno in _WRITE_ONLY_ERRORS:
            return f"cannot write into {out}: {exc.strerror}; {_write_fix(exc.errno)}, and run again"
        return str(exc)
    where, out = Path(exc.filename).absolute(), Path(out).absolute()
    writing = (where == out or out in where.parents
               or (where.parent == out.parent and where.name.startswith(f".{out.name}")))
    reason = exc.strerror or str(exc)
    if writing:
        return f"cannot write {exc.filename}: {reason}; {_write_fix(exc.errno)}, and run again"
    return f"cannot read {exc.filename}: {reason}"
