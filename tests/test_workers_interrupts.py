"""Worker processes of build-tfrecords and analyze (``ordered_map``) when a worker is killed, when the caller is
interrupted and when the caller is killed: the run ends at once, no worker is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_trash.tfrecords import workers

pytestmark = pytest.mark.skipif(workers.usable_cpus() < 2, reason="needs two CPUs for two worker processes")
HERE = Path(__file__).parent


def _run(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def _session(sid: int) -> list:
    """The live processes of session ``sid`` (the caller's, started with start_new_session): workers, the
    resource tracker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # state, ppid, pgrp, session
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its parent's wait is missing


@pytest.mark.timeout(120)
def test_a_killed_worker_ends_the_run_with_worker_lost():
    """multiprocessing.Pool replaced a worker killed by the out-of-memory killer and waited for its result forever:
    build-tfrecords hung at 0% CPU."""
    import worker_probe

    start = time.monotonic()
    with pytest.raises(workers.WorkerLost, match=r"^a worker process ended without its result \(killed: out of "
                                                 r"memory\? fewer --workers need less\)$"):
        list(workers.ordered_map(worker_probe.die_at_3, list(range(40)), 2, chunksize=1))
    assert time.monotonic() - start < 60


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.timeout(120)
def test_workers_end_with_a_caller_killed_with_sigkill():
    """Orphaned workers (and the pipes they held) lived on forever after a kill -9 of the build."""
    proc = _run("import os, signal, worker_probe\n"
                "from edge_trash.tfrecords.workers import ordered_map\n"
                "results = ordered_map(worker_probe.pid_then_sleep, list(range(20)), 2, chunksize=1)\n"
                "print(next(results), next(results), flush=True)\n"
                "os.kill(os.getpid(), signal.SIGKILL)\n")
    pids = {int(p) for p in proc.stdout.readline().split()}
    assert pids and os.getpid() not in pids
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, pids)) and _session(proc.pid) == []  # a worker started late too, and the tracker


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.timeout(120)
def test_ctrl_c_or_sigterm_to_the_process_group_ends_the_run_after_the_items_in_hand(sig):
    """A Ctrl-C (SIGINT to the terminal's whole process group) hung about one build in four in Pool.terminate; the
    work not started must not be done either (20 items of 2 s on two workers: 20 s)."""
    proc = _run("import contextlib, signal, worker_probe\n"
                "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # as from a terminal (a background job
                # of a script, as CI may run the tests, starts with Ctrl-C ignored)
                "from edge_trash.terminal import stop_on_sigterm\n"
                "from edge_trash.tfrecords.workers import ordered_map\n"
                "stop_on_sigterm()\n"
                # closed as the callers close it: a stop that lands in the caller's own code, between two results,
                # stops the workers too (unclosed, the pool's exit handler would run every item)
                "with contextlib.closing(ordered_map(worker_probe.pid_then_sleep, list(range(20)), 2,\n"
                "                                    chunksize=1)) as results:\n"
                "    print(next(results), next(results), flush=True)\n"
                "    for _ in results:\n"
                "        pass\n"
                "print('finished every item', flush=True)\n")
    pids = {int(p) for p in proc.stdout.readline().split()}
    start = time.monotonic()
    os.killpg(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "finished every item" not in out and "KeyboardInterrupt" in err
    assert time.monotonic() - start < 10
    assert not any(map(_alive, pids))


def _spawned_workers(sid: int) -> int:
    found = 0
    for pid in _session(sid):
        try:
            found += b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            pass
    return found


@pytest.mark.timeout(120)
@pytest.mark.parametrize("delay", [0.0, 0.03, 0.06, 0.09, 0.12])
def test_ctrl_c_while_the_workers_start_prints_no_worker_traceback(delay):
    """A Ctrl-C that reached the workers before their start-up code had Ctrl-C ignored printed a KeyboardInterrupt
    traceback from each (22 of 25 Ctrl-Cs sent 0.16-0.40 s after the start of a two-worker run): sent at moments
    of the workers' start-up, it ends the run without one."""
    proc = _run("import signal, worker_probe\n"
                "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
                "from edge_trash.tfrecords.workers import ordered_map\n"
                "try:\n"
                "    for _ in ordered_map(worker_probe.nap, list(range(40)), 2, chunksize=1):\n"
                "        pass\n"
                "except KeyboardInterrupt:\n"
                "    print('interrupted', flush=True)\n")
    deadline = time.monotonic() + 30
    while _spawned_workers(proc.pid) < 2 and time.monotonic() < deadline:  # both workers just spawned
        time.sleep(0.002)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert out == "interrupted\n" and "Traceback" not in err, err
