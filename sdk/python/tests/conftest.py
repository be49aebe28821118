"""Shared test plumbing: a real ipush_server on free ports with its own data dir (killed at
the end even on failure), the shared vectors, and bounded waits."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
VECTORS = REPO_ROOT / "sdk" / "vectors"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def server_binary() -> Path:
    return Path(os.environ.get("IPUSH_SERVER") or REPO_ROOT / "target" / "debug" / "ipush_server")


def require(ok: bool, what: str) -> None:
    """A missing prerequisite fails in CI and skips (saying "skipped") elsewhere."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {what}")
    print(f"skipped: {what}")
    pytest.skip(what, allow_module_level=True)


def free_ports(n: int) -> List[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Server:
    """One ipush_server process. ``start()`` waits for /health; ``stop()`` sends SIGTERM and
    waits (SIGKILL after 10 s)."""

    def __init__(
        self,
        workdir: Path,
        *,
        storage: str = "memory",
        extra: Optional[List[str]] = None,
        ports: Optional[List[int]] = None,
        name: str = "node",
    ) -> None:
        self.workdir = workdir
        self.storage = storage
        self.extra = list(extra or [])
        self.client_port, self.admin_port, self.bus_port = ports or free_ports(3)
        self.name = name
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.data_dir = workdir / f"data-{name}"
        self.log_path = workdir / f"{name}.log"
        self._fixed_ports = ports is not None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def _args(self) -> List[str]:
        return [
            str(server_binary()),
            "--client_host=127.0.0.1",
            f"--client_port={self.client_port}",
            f"--admin_port={self.admin_port}",
            f"--bus_port={self.bus_port}",
            "--cores=2",
            f"--storage={self.storage}",
            f"--data_dir={self.data_dir}",
            f"--pid_file={self.workdir / (self.name + '.pid')}",
            "--log_level=warn",
            *self.extra,
        ]

    def spawn(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self._args(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ipush_server exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.admin_url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"ipush_server not ready within {timeout}s: {self.log_tail()}")

    def start(self, tries: int = 4) -> Server:
        for i in range(tries):
            self.spawn()
            try:
                self.wait_ready()
                return self
            except RuntimeError:
                self.kill()
                if i == tries - 1 or self._fixed_ports:
                    raise
                # A port was taken meanwhile: new ones.
                self.client_port, self.admin_port, self.bus_port = free_ports(3)
        return self

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ipush-py-") as d:
        yield Path(d)


@pytest.fixture
def make_server(workdir: Path) -> Iterator[Callable[..., Server]]:
    """``make_server(storage=..., extra=[...])`` starts a server; all are killed at the end."""
    require(server_binary().is_file(), f"ipush_server binary at {server_binary()}")
    started: List[Server] = []

    def make(**kw: Any) -> Server:
        kw.setdefault("name", f"node{len(started)}")
        s = Server(workdir, **kw)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.kill()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


async def wait_until(
    cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Polls ``cond`` (plain or async) until truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if asyncio.iscoroutine(v):
            v = await v
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


class Recorder:
    """Collects a client's events."""

    def __init__(self, client: Any) -> None:
        self.events: List[tuple[Any, ...]] = []
        self.messages: List[Any] = []
        for name in ("connected", "disconnected", "error", "moved", "replaced", "closed"):
            client.on(name, self._make(name))
        client.on("message", self._message)

    def _make(self, name: str) -> Callable[..., None]:
        def h(*args: Any) -> None:
            self.events.append((name, *args))

        return h

    def _message(self, m: Any) -> None:
        self.messages.append(m)
        self.events.append(("message", m))

    def of(self, name: str) -> List[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == name]

    def bodies(self) -> List[Optional[str]]:
        return [m.body for m in self.messages]


def load_vectors(name: str) -> Dict[str, Any]:
    import json

    require((VECTORS / "READY").exists() or (VECTORS / name).is_file(), f"vectors {VECTORS}")
    return dict(json.loads((VECTORS / name).read_text(encoding="utf-8")))
