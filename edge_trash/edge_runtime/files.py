"""Files written whole or not at all, readable by every user (standard library, Python 3.7).

The bundle's manifest, the hard-example queue and relabel.json are written by one user and read by another
(the installer as root, the service as ``edge-trash``, the operator copying the queue off the board), so
each is written to a temporary file beside it, given mode 0644 (``mkstemp`` makes 0600) and renamed over
the target: a reader, or a crash, sees the old file or the new one, never half of one.
"""

import os
import tempfile

TEMP_SUFFIX = ".tmp"  # temporary names are ".<name>.<random>.tmp" beside the target


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a file name) is one of :func:`write_atomically`'s temporary files."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def write_atomically(path: str, data: bytes, durable: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file in its folder, mode 0644, then rename it over
    ``path``; ``durable`` flushes it to the disk first (fsync). The temporary file is removed on failure."""
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=TEMP_SUFFIX,
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
