"""Deliveries a service will not send again, held on local disk while Redis cannot take them.

A service that gets 503 delivers again, so while Redis is down the webhooks answer 503 and nothing
is held (``bridge.engine.backpressure``). But Slack tries an event four times over about five
minutes and then drops it. When Redis is down for a delivery's last try, the delivery is appended
to a file of this process's own under ``server.held_dir`` and synced to disk before the service is
answered 200; once Redis answers again, what is held is moved into the event log in the order it
came, and the file emptied. The event log deduplicates by delivery id, so a move interrupted by a
crash and made again stores each delivery once.

A process locks its file while it lives. A file left by a process that died is locked by no one:
any process with the same directory takes it over (it moves it, then deletes it), at its start
and every few seconds after. One directory serves one deployment (one Redis): a file moved into
another's Redis would hand that bridge events of stores it may not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import orjson

from bridge.engine.endpoint import Endpoint
from bridge.engine.ingest import EventLog, IncomingRecord, StorageUnavailable
from bridge.engine.metrics import METRICS

log = logging.getLogger(__name__)

MOVE_EVERY_SECONDS = 2.0
"""How often what is held is offered to Redis again (and other processes' orphaned files looked for)."""


class Holding:
    """This process's held deliveries (``hold``) and the task that moves them into the event log (``run``)."""

    def __init__(self, directory: Path, event_log: EventLog) -> None:
        self.directory = directory
        self.event_log = event_log
        self._file: Path | None = None
        self._fd: int | None = None
        self._held = 0
        self._lock = asyncio.Lock()
        """A file is read and emptied while no delivery is appended to it."""
        self._wake = asyncio.Event()
        self._moving = asyncio.Lock()
        """One move at a time (the process's own loop, a test, a stop)."""

    @property
    def held(self) -> int:
        """How many deliveries this process holds now, not moved yet."""
        return self._held

    async def hold(self, endpoint: Endpoint, records: Sequence[IncomingRecord]) -> None:
        """Appends one delivery and syncs it to disk; raises ``StorageUnavailable`` when the disk
        will not take it either (the service is then answered 503, as before)."""
        # Held now: when it is moved, it counts as received now (a reply inside its window stays in it).
        now_ms = int(self.event_log.clock.now() * 1000)
        line = orjson.dumps({"endpoint": [endpoint.kind, endpoint.id], "received_ms": now_ms,
                             "records": [[r.tag, r.msg_id, r.thread, r.data] for r in records]}) + b"\n"  # fmt: skip
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                raise StorageUnavailable(f"Redis is down and {self.directory} cannot hold the delivery: {exc}") from exc
            self._held += 1
        METRICS.held.inc()
        log.warning("%s: Redis is down at the service's last delivery; held in %s until Redis is back",
                    endpoint, self._file)  # fmt: skip
        self._wake.set()

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"  # names sort as begun
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # a live process's file is never taken over
            _sync_directory(self.directory)  # the file's name survives a crash of the machine too
            self._file, self._fd = path, fd
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            os.write(self._fd, line)
            os.fsync(self._fd)
        except OSError:
            # A line cut short (a full disk) would run into the next one: the next delivery,
            # acknowledged, would be unreadable. This one is answered 503 and sent again.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, end)
            raise

    async def run(self) -> None:
        """Moves what is held whenever there is something to move, and looks for orphaned files."""
        while True:
            try:
                await self.move()
            except StorageUnavailable as exc:
                log.info("held deliveries wait for Redis: %s", exc)
            except Exception:  # a file it cannot read (its permissions): said, and tried again
                log.exception("held deliveries in %s could not be moved; trying again", self.directory)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MOVE_EVERY_SECONDS):
                    await self._wake.wait()
            self._wake.clear()

    async def move(self) -> int:
        """Moves this process's held deliveries and every orphaned file's into the event log, in
        the order they came; returns how many. Raises ``StorageUnavailable`` when Redis still
        cannot take them (what was not moved stays held)."""
        async with self._moving:
            return await self._move()

    async def _move(self) -> int:
        moved = 0
        if self._held:
            # Redis is asked with the file unlocked: a slow answer must not hold up a delivery
            # being held meanwhile (the service waits 3 s for the answer, at its last try).
            async with self._lock:
                assert self._file is not None
                lines, count = await asyncio.to_thread(_lines, self._file), self._held
            moved += await self._store(lines, self._file.name)
            async with self._lock:
                if self._held == count:
                    assert self._fd is not None
                    os.ftruncate(self._fd, 0)
                    self._held = 0
                # Else deliveries came meanwhile: the whole file is moved again next time, what
                # is already stored deduplicated (cutting off only the moved part could lose the
                # rest to a crash in the middle).
        for path in _held_files(self.directory):
            if path != self._file:
                moved += await self._take_over(path)
        return moved

    async def _take_over(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return 0  # another process took it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # its process lives, and moves it itself
            if os.fstat(fd).st_nlink == 0:
                return 0  # taken over and deleted while this one waited for the lock
            moved = await self._store(await asyncio.to_thread(_lines, path), path.name)
            os.unlink(path)
            if moved:
                log.info("moved %d deliveries held by a process that ended (%s) into the event log", moved, path.name)
            return moved
        finally:
            os.close(fd)

    async def _store(self, lines: list[bytes], name: str) -> int:
        moved = 0
        for line in lines:
            try:
                held = orjson.loads(line)
                endpoint = Endpoint(held["endpoint"][0], held["endpoint"][1])
                at = int(held["received_ms"])
                records = [IncomingRecord(tag, msg_id, thread, data) for tag, msg_id, thread, data in held["records"]]
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                # A line cut short by a crash or a full disk mid-write: its delivery was answered
                # 503, not 200, so the service did not count on it.
                log.warning("%s: a held line that is not whole was skipped", name)
                continue
            await self.event_log.store(endpoint, records, received_ms=at)
            METRICS.held_moved.inc()
            moved += 1
        return moved

    async def close(self) -> None:
        """At a clean stop: an emptied file goes; one still holding deliveries stays for the next
        process (its lock ends with the file's descriptor)."""
        async with self._lock:
            if self._fd is None or self._file is None:
                return
            if not self._held:
                os.unlink(self._file)
            else:
                log.warning("%d held deliveries stay in %s for the next process to move", self._held, self._file)
            os.close(self._fd)
            self._fd = self._file = None


def unwritable(directory: Path) -> str | None:
    """Why deliveries could not be held in ``directory``, or None when they can: its nearest part
    that exists must be a directory this process may write in (a read-only file system is not)."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable here (a read-only file system, or another user's)"
    return None


def _held_files(directory: Path) -> list[Path]:
    """Every file of held deliveries in ``directory``, the first begun first (a few, on local disk)."""
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
