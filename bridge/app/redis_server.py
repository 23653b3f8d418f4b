"""A private ``redis-server`` child: the default when no REDIS_URL is set, and the tests' server."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType


class RedisServerError(RuntimeError):
    pass


_PR_SET_PDEATHSIG = 1


def _end_with_parent(parent: int) -> Callable[[], None]:
    """Runs in the child before redis-server starts: the kernel sends it SIGTERM (Redis flushes its
    AOF and exits) when the process that started it dies, even by SIGKILL, so an embedded Redis
    never outlives its bridge. Linux only; elsewhere the bridge's own stop() is what ends it."""

    def arrange() -> None:
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return arrange


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    return _ask(port, b"PING\r\n").startswith(b"+PONG")


class EmbeddedRedis:
    """Runs ``redis-server`` on a free loopback port with its data (AOF, synced on every write) under
    ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        appendonly: bool = True,
        port: int | None = None,
        appendfsync: str = "always",
        extra_args: list[str] | None = None,
    ) -> None:
        self.extra_args = extra_args or []
        self.data_dir = data_dir
        self.appendonly = appendonly
        # "always": a push is acknowledged only once it is on disk, so not even a machine crash loses
        # it; bench-ingest measures the cost beside "everysec" (a second of writes at risk).
        self.appendfsync = appendfsync
        self.port = port or 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(
                "redis-server not found on PATH: install it (Debian: apt-get install redis-server; "
                "`make demo` does this) or set REDIS_URL to an existing server"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(5):  # the free port can be taken between probe and bind
            port = self.port or free_port()
            args = [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--dir", str(self.data_dir.resolve()),
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", self.appendfsync,
                "--save", "",
                "--daemonize", "no",
                "--protected-mode", "yes",
                "--loglevel", "warning",
                *self.extra_args,
            ]  # fmt: skip
            log_file = open(self.data_dir / "redis.log", "ab")  # noqa: SIM115
            self._process = subprocess.Popen(
                args, stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=_end_with_parent(os.getpid())
            )
            log_file.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._process.poll() is None:
                if _answers_ping(port):
                    self.port = port
                    return self
                time.sleep(0.02)
            self._process.kill()
            self._process.wait()
            if self.port:
                break
        raise RedisServerError(f"redis-server did not start; see {self.data_dir / 'redis.log'}")

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()  # SIGTERM: Redis flushes the AOF before exiting
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        """Dies as a crash would (tests of 'Redis unavailable')."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_cluster(base: Path, nodes: int = 3, *, appendonly: bool = False) -> Iterator[list[EmbeddedRedis]]:
    """A Redis Cluster of ``nodes`` primaries (no replicas) on free loopback ports, every slot
    assigned and the cluster state ``ok`` before it is handed over: the tests' and benches' cluster."""
    cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000"]
    servers: list[EmbeddedRedis] = []
    try:
        for i in range(nodes):
            servers.append(EmbeddedRedis(base / f"n{i}", appendonly=appendonly, extra_args=cluster_args).start())
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{s.port}" for s in servers], "--cluster-replicas", "0",
             "--cluster-yes"], check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        for server in servers:
            while b"cluster_state:ok" not in _ask(server.port, b"CLUSTER INFO\r\n"):
                if time.monotonic() > deadline:
                    raise RedisServerError("the cluster never became ok")
                time.sleep(0.1)
        yield servers
    finally:
        for server in servers:
            server.stop()


def cluster_url(servers: list[EmbeddedRedis]) -> str:
    return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in servers)


def _ask(port: int, command: bytes) -> bytes:
    """One inline command's raw reply (enough for short status answers)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(command)
            return sock.recv(4096)
    except OSError:
        return b""
