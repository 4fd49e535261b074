"""Child processes of the dev stack: how one is described, started, awaited and stopped.

Shared by the supervisor (`novalog up`), the embedded infrastructure and the test
fixtures, so every one of them starts and stops processes the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """Something stops the stack from starting; the message says what to do."""


@dataclass
class ProcessSpec:
    """One child process of the supervisor."""

    name: str
    kind: str  # broker | postgres | role
    argv: list[str]
    address: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    stop_signal: int = signal.SIGTERM
    version: str = ""  # what it is, for `novalog status` ("apache-kafka 4.1.1")
    stop_timeout: float = 15.0


@dataclass
class Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    restarts: int = 0
    next_restart: float | None = None
    log_file: IO[bytes] | None = None


def port_free(host: str, port: int) -> bool:
    """True when nothing listens on host:port (bind test, as the server itself would)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def tcp_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        socket.create_connection((host, port), timeout).close()
    except OSError:
        return False
    return True


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it when the supervisor dies, however it dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(spec: ProcessSpec) -> Child:
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(spec.log_path, "ab")  # noqa: SIM115 - owned by the Child, closed on stop
    env = {**os.environ, **spec.env} if spec.env else None
    proc = subprocess.Popen(
        spec.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
        user=spec.user, start_new_session=True, preexec_fn=_die_with_parent,
    )
    return Child(spec=spec, proc=proc, log_file=out)


def stop_child(child: Child, timeout: float | None = None) -> None:
    """Ask politely, then SIGKILL; always reap, so nothing is left behind."""
    proc = child.proc
    timeout = child.spec.stop_timeout if timeout is None else timeout
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(child.spec.stop_signal)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs: killing", child.spec.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stray grandchildren of that session
    if child.log_file is not None:
        child.log_file.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def wait_until(check: Callable[[], bool], child: Child | None, what: str,
               timeout: float) -> None:
    """Poll `check`; fail fast with the child's log when it exits meanwhile."""
    deadline = time.monotonic() + timeout
    while not check():
        if child is not None and child.proc.poll() is not None:
            raise StackError(f"{what} exited with code {child.proc.returncode} while "
                             f"starting. Last lines of {child.spec.log_path}:\n"
                             f"{tail(child.spec.log_path)}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not become ready in {timeout:.0f}s "
                             f"(see {child.spec.log_path if child else 'its log'})")
        time.sleep(0.05)


LISTEN_PORTS = range(20000, 32768)  # below Linux's ephemeral range (32768-60999)


def free_port() -> int:
    """A port nothing listens on now, for a server about to start. Taken below the
    ephemeral range: a port the kernel handed out (bind to 0) may be given to some
    outgoing connection before a slow server (a JVM) binds it (seen once: Kafka's
    "Address already in use" in a test run)."""
    for _ in range(200):
        port = random.choice(LISTEN_PORTS)
        if port_free("127.0.0.1", port):
            return port
    raise OSError("no free port below the ephemeral range")
