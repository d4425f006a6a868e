"""Processes the benchmarks start on loopback, and what they cost (CPU seconds, RSS) from /proc.

Every process is started by `Managed.start` and stopped by its own PID (its process group, so a
server's children go too); nothing is ever looked up or killed by name.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence, TypeVar

import httpx


REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
S = TypeVar("S", bound="Stoppable")


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports, held open together so none is handed out twice."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors a poll outlives: a refused connection, an API server restarting (the cluster is shared
    with test runs that restart it on purpose)."""
    errors: list[type[BaseException]] = [httpx.HTTPError, OSError]
    try:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        errors += [urllib3.exceptions.HTTPError, ApiException]
    except ImportError:
        pass
    return tuple(errors)


TRANSIENT = _transient_errors()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll `check` until it is true; return the seconds it took. Raises TimeoutError with `what`."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            if check():
                return time.monotonic() - start
        except TRANSIENT:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


@dataclass
class Managed:
    """A child process with its log file; `stop()` ends it (and its group) by PID."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @classmethod
    def start(cls, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> "Managed":
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir.resolve() / f"{name}.log"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONPATH", str(REPO))
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=str(cwd or REPO), start_new_session=True)
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)


class Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class ProcessGroup:
    """Everything one benchmark started; stopped in reverse order, even after a failure."""

    log_dir: Path
    members: list[Stoppable] = field(default_factory=list)

    def adopt(self, proc: S) -> S:
        """Take over stopping a process started elsewhere (e.g. by the test fixtures' launchers)."""
        self.members.append(proc)
        return proc

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> Managed:
        proc = Managed.start(name, argv, self.log_dir, env, cwd)
        self.members.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.members):
            proc.stop()
        self.members.clear()

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_http_ok(url: str, timeout: float, proc: Managed | None = None,
                 accept: Callable[[httpx.Response], bool] | None = None) -> None:
    """Poll `url` until it answers 2xx (and `accept` agrees); fail early if `proc` died."""

    def ready() -> bool:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}")
        response = httpx.get(url, timeout=2.0)
        return response.is_success and (accept is None or accept(response))

    wait_until(ready, timeout, f"{url} ready")


@dataclass
class Usage:
    cpu_s: float
    rss_bytes: int


def _own_usage(pid: int) -> Usage:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" closing comm, utime and stime are the 12th and 13th fields.
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss_bytes = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_bytes = int(line.split()[1]) * 1024
                break
    return Usage(cpu_s, rss_bytes)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def usage(pid: int) -> Usage:
    """CPU seconds (user + system) and resident memory of a process and its children (nginx's
    worker runs under its master), from /proc."""
    total = _own_usage(pid)
    for child in children(pid):
        try:
            extra = _own_usage(child)
        except OSError:
            continue  # it just exited
        total = Usage(total.cpu_s + extra.cpu_s, total.rss_bytes + extra.rss_bytes)
    return total


class CpuMeter:
    """CPU share (1.0 = one core busy) of a process over a window, and its peak RSS."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start_usage = usage(pid)
        self.start_time = time.monotonic()
        self.peak_rss = self.start_usage.rss_bytes

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, usage(self.pid).rss_bytes)

    def stop(self) -> tuple[float, int]:
        end = usage(self.pid)
        self.peak_rss = max(self.peak_rss, end.rss_bytes)
        elapsed = time.monotonic() - self.start_time
        return (end.cpu_s - self.start_usage.cpu_s) / elapsed if elapsed > 0 else 0.0, self.peak_rss
