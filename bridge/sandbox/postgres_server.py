"""A private PostgreSQL server for tests and benchmarks: Debian's ``postgresql`` binaries, a fresh
cluster in a folder, one free loopback port, no password (trust on loopback only). Not a production
database: ``ARCHIVE_URL`` points the bridge at one of those."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from bridge.app.redis_server import free_port


class PostgresServerError(RuntimeError):
    pass


def _binaries() -> Path:
    """Debian puts the server programs in /usr/lib/postgresql/<major>/bin, off PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PostgresServerError("PostgreSQL not found: install Debian's postgresql package (`make test` does this)")


class EmbeddedPostgres:
    """``initdb`` + ``pg_ctl start`` in a folder of its own, removed on stop. PostgreSQL refuses to
    run as root, so as root the cluster belongs to the ``postgres`` user the Debian package creates
    (and its folder sits directly in the temp dir, which that user can reach)."""

    def __init__(self, database: str = "bridge") -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="feige-postgres-"))
        self.database = database
        self.port = 0
        self._databases = 0
        self._bin = _binaries()
        self._user: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str) -> None:
        command = [str(self._bin / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PostgresServerError(f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> EmbeddedPostgres:
        if self._user is not None:
            os.chown(self.data_dir, self._user.pw_uid, self._user.pw_gid)
            self.data_dir.chmod(0o700)
        cluster = self.data_dir / "cluster"
        self._run("initdb", "-D", str(cluster), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        self.port = free_port()
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data_dir} -c fsync=off"
        self._run("pg_ctl", "-D", str(cluster), "-o", options, "-l", str(self.data_dir / "log"), "-w", "start")
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", self.database)
        return self

    def new_database(self) -> str:
        """An empty database of its own on this server (one per test), as an ``ARCHIVE_URL``."""
        self._databases += 1
        name = f"{self.database}_{self._databases}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.port:
            self._run("pg_ctl", "-D", str(self.data_dir / "cluster"), "-m", "immediate", "-w", "stop")
            self.port = 0
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
