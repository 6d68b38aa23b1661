"""File names and texts whose bytes were not UTF-8.

A zip made on Windows stores names in cp437 or cp1252 and ``unzip`` writes those bytes
as they are; Python lists them with surrogate escapes (``café`` in Latin-1 is
``caf\\udce9``), and JSON written from such a listing keeps the escapes. This module turns
those names into the spellings a user typed, into text UTF-8 files can hold, and says
which names no file system can hold at all.
"""

from __future__ import annotations

import codecs
import os
import re
import sys
from typing import List

# How archive tools name files when they are not UTF-8: a zip made on Windows stores the
# DOS code page (cp437) or the ANSI one (cp1252) and ``unzip`` writes those bytes as they are.
_LEGACY_ENCODINGS = ("cp1252", "cp437", "latin-1")


def utf8_text(name: str) -> str:
    """``name`` with the UTF-8 bytes a legacy locale lists escaped (``LC_ALL=C`` without UTF-8 mode lists
    ``café`` as ``caf\\udcc3\\udca9``) read as the text they are; a name whose bytes are not UTF-8 as it is."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        try:
            return name.encode("utf-8", "surrogateescape").decode("utf-8")
        except UnicodeError:
            return name


def legacy_spellings(name: str) -> List[str]:
    """What a file name that is not valid UTF-8 on disk (``café`` stored as Latin-1 bytes,
    which Python lists as ``caf\\udce9``) says in each legacy encoding; empty for UTF-8 names."""
    try:
        utf8_text(name).encode("utf-8")
        return []
    except UnicodeEncodeError:
        raw = os.fsencode(name)
    spellings = []
    for encoding in _LEGACY_ENCODINGS:
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if text not in spellings:
            spellings.append(text)
    return spellings


def not_utf8(path: str) -> bool:
    """Whether ``path`` (as Python lists it) holds bytes that were not UTF-8."""
    return bool(legacy_spellings(path))


_ESCAPED_BYTES = re.compile("[\udc80-\udcff]+")  # Python's escapes of bytes that were not UTF-8


def _decode_escaped(match: "re.Match[str]") -> str:
    raw = match.group().encode("utf-8", "surrogateescape")
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def readable_text(text: str) -> str:
    """``text`` as valid Unicode, which UTF-8 files can hold.

    JSON may escape lone surrogates (``"caf\\udce9"``): Python writes them so for file names
    whose bytes were not UTF-8 (``os.listdir`` gives ``café`` stored in Latin-1 as
    ``caf\\udce9``). Those bytes are decoded as UTF-8, else cp1252, else Latin-1 (``café``);
    any other lone surrogate is written out as its escape (``\\ud800``)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        text = _ESCAPED_BYTES.sub(_decode_escaped, text)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def disk_spelling(file_name: str) -> str:
    """``file_name`` as Python's file functions spell the file whose name is its UTF-8 bytes.

    The same string where Python's file system encoding is UTF-8 (nearly everywhere); under a
    legacy locale (``LANG=en_US.ISO-8859-1``, or ``LC_ALL=C`` with ``PYTHONUTF8=0``) ``café``
    would otherwise be looked up as Latin-1 bytes and ``Фото`` could not be looked up at all,
    while the files, unpacked or copied from anywhere today, are named in UTF-8."""
    if codecs.lookup(sys.getfilesystemencoding()).name == "utf-8":
        return file_name
    try:
        return os.fsdecode(file_name.encode("utf-8", "surrogateescape"))
    except UnicodeError:  # a lone surrogate that stands for no byte: unnameable_reason says so
        return file_name


def unnameable_reason(file_name: str) -> str:
    """What in ``file_name`` no file system can name ("" when nothing): a NUL character, or
    a lone ``\\ud800`` (``\\udce9``, Python's escape of a non-UTF-8 byte, is a byte on disk)."""
    if "\0" in file_name:
        return "a NUL character (\\u0000)"
    try:
        os.fsencode(disk_spelling(file_name))
        return ""
    except UnicodeEncodeError:
        return "an escaped lone surrogate"
