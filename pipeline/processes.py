"""Child processes started in a session of their own (``start_new_session=True``): servers, Airflow,
`dvc repro`."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still counts
        return True
    return True


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """TERM the process group of `proc`; KILL what is left of it after `timeout_s`.

    The whole group, not only `proc`: children it started (stage commands, their worker pools) are ended
    too, also when `proc` itself has already exited and left them behind.
    """
    pgid = proc.pid
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        proc.poll()
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader: an unreaped one keeps the group alive
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
