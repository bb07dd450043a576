"""Signals: SIGINT, SIGTERM and SIGHUP end a run the same way, and no child outlives its parent.

A scheduler (`scancel`, `timeout`, Kubernetes) stops a job with SIGTERM, a user with Ctrl-C (SIGINT), a
closed terminal with SIGHUP. Inside `as_interrupts()` each of them raises `Interrupted`, a KeyboardInterrupt
that remembers its signal, in the main thread; the runner saves what was measured, marks the document
"interrupted" and exits with 128 + the signal number (130, 143, 129), as shells and schedulers expect.

Child processes (collective ranks, per-GPU workers) call `die_with_parent()` first thing: on Linux the kernel
then sends them SIGKILL when the parent dies, even when the parent itself was SIGKILLed and had no chance to
tear them down (prctl PR_SET_PDEATHSIG). Elsewhere a watcher thread polls the parent's PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

HANDLED = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal; `signum` says which (SIGINT for a plain Ctrl-C)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)


def signal_of(exc: BaseException) -> int:
    """The signal behind a KeyboardInterrupt (SIGINT unless it came through `as_interrupts`)."""
    return getattr(exc, "signum", int(signal.SIGINT))


def exit_code(exc: BaseException) -> int:
    """128 + the signal number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + signal_of(exc)


def describe(exc: BaseException) -> str:
    return signal.Signals(signal_of(exc)).name


def _raise(signum: int, frame: object) -> None:
    # One signal stops the run; a second one while what was measured is being saved is ignored, so the
    # save and the report can finish (SIGKILL remains for the impatient).
    for s in HANDLED:
        signal.signal(s, signal.SIG_IGN)
    raise Interrupted(signum)


@contextlib.contextmanager
def as_interrupts() -> Iterator[None]:
    """Within the block SIGINT, SIGTERM and SIGHUP raise `Interrupted`; outside it, the old handlers."""
    if threading.current_thread() is not threading.main_thread():  # signals can only be set there
        yield
        return
    old = {s: signal.getsignal(s) for s in HANDLED}
    for s in HANDLED:
        signal.signal(s, _raise)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def die_with_parent(parent_pid: int) -> None:
    """End this process when `parent_pid` ends (call first thing in a child process)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0:
                if os.getppid() != parent_pid:  # the parent died before prctl took effect
                    os._exit(1)
                return
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True, name="parent-watch").start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)
