"""Run one function over many items in worker processes, results in input order.

``build-tfrecords`` decodes photos and ``analyze`` measures them this way. Workers are
spawned, never forked: the caller may hold TensorFlow's threads, which a fork copies in
a broken state. With one worker (or one item) everything runs in this process.

A worker that dies (the kernel's out-of-memory killer, a ``kill -9``) raises :class:`WorkerLost`
at once (``multiprocessing.Pool`` waited for its result forever). Ctrl-C and SIGTERM are the
caller's alone: workers ignore them, and the caller drops the work not started, so an interrupted
run ends after the items in hand; workers also die with the caller (Linux), never left running as
orphans that hold its terminal's pipes.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Optional, Sequence, Tuple, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WorkerLost(RuntimeError):
    """A worker process ended without returning its result (killed, or out of memory)."""


CGROUP_CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "QUOTA PERIOD" or "max PERIOD"


def usable_cpus() -> int:
    """CPUs this process may run on: ``taskset``'s or a container's CPU set, and a container's CPU
    quota (``docker run --cpus 2`` on a 64-core host is 2), not the host's count."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        with open(CGROUP_CPU_MAX, encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):  # no cgroup v2 here, or a format we do not know
        pass
    return cpus


def worker_count(asked: Optional[int]) -> Tuple[int, str]:
    """``(processes, note)`` for a ``--workers`` option: one per usable CPU when not given; more
    than that are cut to it, and the note (else "") says so."""
    cpus = usable_cpus()
    if asked is None:
        return cpus, ""
    if asked <= cpus:
        return asked, ""
    return cpus, (f"note: --workers {asked}: this process may use {cpus} CPU{'s' if cpus > 1 else ''}, so "
                  f"{cpus} worker{'s' if cpus > 1 else ''} (each more only adds its start-up time and memory)")


def ordered_map(func: Callable[[T], R], items: Sequence[T], workers: int, chunksize: int = 2) -> Iterator[R]:
    """``func(item)`` for each item, in order, computed by up to ``workers`` processes, never more
    than :func:`usable_cpus` (each more only adds its start-up and memory: 64 on two CPUs made a
    build 10x slower); ``func`` must be a module-level function: it is pickled by name. Close the
    iterator (``contextlib.closing``) when not read to its end: that stops the workers at once."""
    workers = min(workers, usable_cpus())
    if workers <= 1 or len(items) < 2:
        yield from map(func, items)
        return
    import multiprocessing
    import signal
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_start, initargs=(os.getpid(),))
    try:
        # the workers start as map submits the items: each inherits Ctrl-C and SIGTERM blocked, until its start-up
        # code has them ignored (one arriving before would print its KeyboardInterrupt traceback); here they wait
        # the few milliseconds the submits take, then arrive
        stops = {signal.SIGINT, signal.SIGTERM}
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        try:
            results = pool.map(func, items, chunksize=chunksize)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        yield from results
    except BrokenProcessPool:
        for process in list((getattr(pool, "_processes", None) or {}).values()):  # the pool's SIGTERM is ignored
            process.kill()
        raise WorkerLost("a worker process ended without its result (killed: out of memory? fewer --workers need "
                         "less)") from None
    finally:  # interrupted, failed, or the caller stopped reading: the work not started is dropped, and each
        # worker ends after the item in its hands (killed mid-write of a result, it would hang the pool's reader)
        pool.shutdown(wait=True, cancel_futures=True)


def _worker_start(caller: int) -> None:
    """In each worker: leave Ctrl-C and SIGTERM (sent to the whole process group by a terminal or systemd) to
    the caller, which stops the workers, and die with the caller (Linux's ``PR_SET_PDEATHSIG``): a worker
    orphaned by a ``kill -9`` of the caller would otherwise wait forever."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked by the caller until now
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != caller:  # the caller died before the line above: nothing would end this worker
        os._exit(1)
