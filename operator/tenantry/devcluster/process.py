"""Child processes that never outlive us: started with a parent-death signal, stopped in order.

Why PR_SET_PDEATHSIG: a test run killed with SIGKILL never reaches its teardown, and an orphaned
etcd or kube-apiserver would hold ports and memory until someone notices. The kernel sends the
child SIGTERM the moment its parent dies, whatever the parent's fate.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _preexec(uid: int | None, gid: int | None) -> Callable[[], None]:
    def run_in_child() -> None:
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if uid is not None:
            os.setuid(uid)
        # After the credential change: the kernel clears the parent-death signal on one.
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return run_in_child


class ManagedProcess:
    """One long-running child with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *,
                 env: dict[str, str] | None = None, uid: int | None = None,
                 gid: int | None = None, cwd: Path | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            preexec_fn=_preexec(uid, gid),
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; safe to call twice."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(5)
        self._log.close()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               process: ManagedProcess | None = None, interval: float = 0.2) -> None:
    """Poll `check` until it is true; fail early if `process` dies, with its log tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.running():
            raise RuntimeError(
                f"{process.name} exited with code {process.process.returncode} while waiting "
                f"for {what}; last log lines ({process.log_path}):\n{process.log_tail()}"
            )
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    tail = f"; last log lines:\n{process.log_tail()}" if process is not None else ""
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
