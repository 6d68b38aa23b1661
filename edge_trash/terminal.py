"""How host commands behave towards the terminal and the signals they get.

Progress bars fit where stderr goes: drawn as usual on a terminal, one line at most every
30 seconds in a log file (a CI job's), none when stderr is closed. SIGTERM (``kill``,
``timeout``, ``docker stop``, a cancelled CI job) stops a command as Ctrl-C does, so it
cleans up after itself: temporary files removed, worker processes ended.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Dict, Iterable, Optional, Sequence

LOG_INTERVAL_S = 30.0  # how often a bar writes into a file that is not a terminal


def progress_options() -> Dict[str, Any]:
    """``tqdm`` keyword arguments for where stderr goes."""
    stream = sys.stderr
    if stream is None:  # closed (2>&-) or a windowless program
        return {"disable": True}
    try:
        on_terminal = stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        on_terminal = False
    return {} if on_terminal else {"mininterval": LOG_INTERVAL_S}


def progress_bar(iterable: Optional[Iterable[Any]] = None, disable: bool = False, **kwargs: Any) -> Any:
    """A ``tqdm`` bar over ``iterable`` (``total=`` without one) that fits where stderr goes."""
    from tqdm import tqdm

    options = dict(kwargs, dynamic_ncols=True, **progress_options())
    options["disable"] = disable or options.get("disable", False)
    bar = tqdm(iterable, **options)
    if "mininterval" in options:  # a log file: a new postfix waits for the next timed redraw, as counts do
        set_postfix = bar.set_postfix
        bar.set_postfix = lambda *args, refresh=False, **values: set_postfix(*args, refresh=refresh, **values)
    return bar


_received: list = []  # the signal that stopped the command, if one did


def _interrupt(signum: int, frame: Any) -> None:
    _received.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def exit_status_of_signal() -> Optional[int]:
    """128 + the signal that stopped the command (130 for Ctrl-C, 143 for SIGTERM), as a shell reports a process
    the signal killed; None when no signal did."""
    return 128 + _received[0] if _received else None


def note_ctrl_c() -> None:
    """From now on, Ctrl-C (SIGINT) still raises ``KeyboardInterrupt``, and is noted, so that the command exits 130
    as a shell reports a process Ctrl-C stopped, not 1 as for an error (main thread, default handler only)."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _interrupt)


def stop_on_sigterm() -> None:
    """From now on, SIGTERM raises ``KeyboardInterrupt`` as Ctrl-C does (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)


def shell_word(value: Any) -> str:
    """``value`` (a path) as one word of a shell command a user copies: quoted where it has
    spaces or other characters the shell would read (``'my data/annotations.json'``)."""
    import shlex

    return shlex.quote(str(value))


def counted(count: int, one: str, many: str) -> str:
    """``count`` with the words that agree with it: ``counted(1, "class has", "classes have")``."""
    return f"{count} {one if count == 1 else many}"


def plural(n: int, word: str, many: Optional[str] = None) -> str:
    """``n`` and ``word`` in the number that agrees with it: ``plural(1, "class")`` is ``"1 class"``,
    ``plural(2, "class")`` ``"2 classes"``, ``plural(3, "image")`` ``"3 images"``; ``many`` gives a plural
    the English rules below miss (``plural(2, "shelf", "shelves")``). Only the last word is made plural
    (``plural(2, "other image")`` is ``"2 other images"``); :func:`counted` takes both forms (verbs too)."""
    if many is None:
        if word.endswith(("s", "x", "z", "ch", "sh")):
            many = word + "es"
        elif word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u", ""):
            many = word[:-1] + "ies"
        else:
            many = word + "s"
    return counted(n, word, many)


def examples(items: Sequence[Any], limit: int = 5) -> str:
    """The first ``limit`` items and how many more: ``"a, b, c and 4 more"``."""
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def display_width(text: str) -> int:
    """The terminal columns ``text`` takes: 2 for each wide or full-width character (CJK, most emoji), 0 for a
    combining mark or zero-width character (``é`` written as ``e`` + U+0301 takes one), 1 for the rest."""
    import unicodedata

    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def pad_right(text: str, width: int) -> str:
    """``text`` followed by the spaces that make it ``width`` terminal columns wide (:func:`display_width`)."""
    return text + " " * max(0, width - display_width(text))
