"""The archive behind one small interface: ``Archive.put`` (an upsert keyed by ids, so a retry
archives nothing twice) and the reads that lists, exports and statistics make. SQLAlchemy 2 Core on
SQLite (the embedded default; reads through aiosqlite, copies by sqlite3 on a thread of their own)
or PostgreSQL (``postgresql://``, through asyncpg). The schema is Alembic's, run by ``migrate`` — at
start, and by ``bridge archive migrate``."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import ColumnElement, Table, create_engine, event, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bridge.archive.schema import (
    SNAPSHOT_TABLES,
    chat_messages,
    chats,
    metadata,
    task_comments,
    task_evidence,
    task_log,
    task_orders,
)

EMBEDDED_ARCHIVE = Path("var") / "archive.sqlite3"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def archive_url(environ: Mapping[str, str] | None = None, embedded: Path = EMBEDDED_ARCHIVE) -> str:
    """``ARCHIVE_URL`` when set (``postgresql://…`` for several replicas), else the embedded SQLite file."""
    env = os.environ if environ is None else environ
    return env.get("ARCHIVE_URL") or f"sqlite:///{embedded}"


def shown_url(url: str) -> str:
    """A database's address as people may be shown it (logs, errors): no user, no password."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _drivers(url: str) -> tuple[str, str]:
    """(async URL, sync URL) for one database URL as people write it."""
    if url.startswith("sqlite:///"):
        return url.replace("sqlite:///", "sqlite+aiosqlite:///", 1), url
    if url.startswith(("postgresql://", "postgres://")):
        rest = url.split("://", 1)[1]
        return f"postgresql+asyncpg://{rest}", f"postgresql+psycopg://{rest}"
    raise ValueError(f"ARCHIVE_URL {url.split('://', 1)[0]}://… is neither sqlite:/// nor postgresql://")


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """WAL: readers (lists, exports) never wait on the writer (the archiving step)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def migrate(url: str) -> None:
    """Brings the schema to the newest version (Alembic), creating the SQLite file's folder. Several
    processes starting at once take turns: the first migrates, the others find it done."""
    _, sync_url = _drivers(url)
    lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if sync_url.startswith("sqlite:///"):
        path = Path(sync_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _file_lock(path.with_name(path.name + ".migrate-lock"))
    engine = create_engine(sync_url)
    try:
        with lock, engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


MIGRATION_LOCK_KEY = 0x46454947  # "FEIG": the advisory lock the bridge's migrations take in PostgreSQL


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


Snapshot = Mapping[str, Sequence[Mapping[str, Any]]]
"""One chat's or task order's state as archive rows: table name → rows (its own row, its messages,
comments, log entries, evidence)."""

IDS_PER_QUERY = 500  # well under SQLite's limit of bound parameters per statement


class Archive:
    def __init__(self, url: str) -> None:
        async_url, sync_url = _drivers(url)
        self.url = url
        self.engine: AsyncEngine = create_async_engine(async_url)
        self._sqlite_writes: Engine | None = None
        self._sqlite_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-writer")
        if async_url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_wal)
            # SQLite's copies are written by sqlite3 itself on one thread of their own, a whole group
            # in one hop to it. aiosqlite hops to its thread and back for every statement, the BEGIN
            # and the COMMIT: a chat's copy cost 0.86 ms of CPU that way, 0.39 ms this way. asyncpg
            # is a real async driver and stays: psycopg on a thread cost less for one copy (0.55
            # against 0.67 ms) but twice as much per copy in groups of 64 (0.07 against 0.04 ms).
            self._sqlite_writes = create_engine(sync_url)
            event.listen(self._sqlite_writes, "connect", _sqlite_wal)
        self._waiting: list[tuple[Sequence[Snapshot], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def close(self) -> None:
        await self.engine.dispose()
        if self._sqlite_writes is not None:
            # After the write under way, if any: the thread takes its work in order.
            await asyncio.get_running_loop().run_in_executor(self._sqlite_writer, self._sqlite_writes.dispose)
        self._sqlite_writer.shutdown(wait=False)

    async def put(self, snapshots: Sequence[Snapshot]) -> None:
        """Chats and task orders with everything under them; again replaces them, and an older
        snapshot never replaces a newer one. Copies asked for while a write is under way go together
        in the next transaction (group commit: one writer per process, which SQLite wants, and far
        fewer commits under load); a failed group is written again one copy at a time, so one bad
        copy fails alone."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((snapshots, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_waiting())
        await done

    async def _write_waiting(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._write([s for snapshots, _ in group for s in snapshots])
            except Exception as error:  # handed to each waiting caller
                if len(group) == 1:
                    _settle(group[0][1], error)
                    continue
                for snapshots, done in group:
                    try:
                        await self._write(snapshots)
                    except Exception as alone:
                        _settle(done, alone)
                    else:
                        _settle(done, None)
                continue
            for _, done in group:
                _settle(done, None)

    async def _write(self, snapshots: Sequence[Snapshot]) -> None:
        by_table: dict[str, list[dict[str, Any]]] = {}
        for snapshot in snapshots:
            for name, rows in snapshot.items():
                by_table.setdefault(name, []).extend({k: _utc(v) for k, v in r.items()} for r in rows)
        if self._sqlite_writes is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._sqlite_writer, _upsert_in_one_transaction, self._sqlite_writes, by_table)
            return
        async with self.engine.begin() as conn:
            await conn.run_sync(_upsert_all, by_table)

    async def tasks(
        self,
        store_id: str | None = None,
        status: str | None = None,
        *,
        task_id: str | None = None,
        creator_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        offset: int = 0,
        details: bool = True,
    ) -> list[dict[str, Any]]:
        """Task orders, newest first; with ``details`` each carries its log, comments and evidence."""
        where = _filters(task_orders, store_id, since, until, "created_at") + _task_filters(status, creator_id, task_id)
        query = select(task_orders).where(*where).order_by(task_orders.c.created_at.desc(), task_orders.c.task_id)
        query = query.limit(limit).offset(offset) if limit is not None else query
        async with self.engine.connect() as conn:
            rows = [_row(r) for r in await conn.execute(query)]
            if details and rows:
                ids = ("store_id", "task_id")
                await _attach(conn, rows, ids, "log", task_log, task_log.c.seq)
                await _attach(conn, rows, ids, "comments", task_comments, task_comments.c.at)
                await _attach(conn, rows, ids, "evidence", task_evidence, task_evidence.c.position)
        return rows

    async def count_tasks(
        self, store_id: str | None = None, status: str | None = None, *, creator_id: str | None = None
    ) -> int:
        where = _filters(task_orders, store_id, None, None, "created_at") + _task_filters(status, creator_id, None)
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(task_orders).where(*where))).scalar_one())

    async def chats(
        self,
        store_id: str | None = None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        details: bool = True,
    ) -> list[dict[str, Any]]:
        """Chats opened in [since, until), oldest first; with ``details`` each carries its messages."""
        where = _filters(chats, store_id, since, until, "opened_at")
        if status is not None:
            where.append(chats.c.status == status)
        query = select(chats).where(*where).order_by(chats.c.opened_at, chats.c.conversation_id)
        async with self.engine.connect() as conn:
            rows = [_row(r) for r in await conn.execute(query)]
            if details and rows:
                await _attach(
                    conn, rows, ("store_id", "conversation_id"), "messages", chat_messages, chat_messages.c.at
                )
        return rows

    async def chat_figures(self, store_id: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """What response statistics need of each chat opened in [since, until) (A9), nothing more."""
        c = chats.c
        columns = (c.opened_at, c.assignee, c.first_reply_by, c.first_reply_seconds, c.in_window, c.close_reason,
                   c.status)  # fmt: skip
        query = select(*columns).where(*_filters(chats, store_id, since, until, "opened_at"))
        async with self.engine.connect() as conn:
            return [_row(r) for r in await conn.execute(query)]

    async def task_figures(self, store_id: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """What statistics need of each task order finished (processed or timed out) in [since, until)."""
        c = task_orders.c
        query = select(c.deadline_at, c.finished_at, c.status).where(
            *_filters(task_orders, store_id, since, until, "finished_at")
        )
        async with self.engine.connect() as conn:
            return [_row(r) for r in await conn.execute(query)]


def _filters(
    table: Table, store_id: str | None, since: datetime | None, until: datetime | None, column: str
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if store_id is not None:
        where.append(table.c.store_id == store_id)
    if since is not None:
        where.append(table.c[column] >= _utc(since))
    if until is not None:
        where.append(table.c[column] < _utc(until))
    return where


def _task_filters(status: str | None, creator_id: str | None, task_id: str | None) -> list[ColumnElement[bool]]:
    """What lists, counts and look-ups of task orders narrow by, beside store and period."""
    asked = ((task_orders.c.status, status), (task_orders.c.creator_id, creator_id), (task_orders.c.task_id, task_id))
    return [column == value for column, value in asked if value is not None]


def _utc(value: Any) -> Any:
    """Times are kept in UTC: SQLite stores a time's fields without its offset, so a time in +08:00
    would sort eight hours late beside one in UTC."""
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _row(row: Any) -> dict[str, Any]:
    """A row as a dict, its times aware again (SQLite gives them back without a zone)."""
    out = dict(row._mapping)
    for k, v in out.items():
        if isinstance(v, datetime) and v.tzinfo is None:
            out[k] = v.replace(tzinfo=UTC)
    return out


async def _attach(
    conn: AsyncConnection,
    parents: list[dict[str, Any]],
    ids: tuple[str, str],
    name: str,
    child: Table,
    order: ColumnElement[Any],
) -> None:
    """Gives each parent row its child rows under ``name``, in one query per child table however
    many parents (a list, an export of 100,000 chats)."""
    wanted = {(p[ids[0]], p[ids[1]]) for p in parents}
    stores = {s for s, _ in wanted}
    query = select(child).where(child.c[ids[0]].in_(stores)).order_by(child.c[ids[0]], child.c[ids[1]], order)
    if len(wanted) <= IDS_PER_QUERY:
        query = query.where(child.c[ids[1]].in_({i for _, i in wanted}))
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in await conn.execute(query):
        entry = _row(row)
        key = (entry[ids[0]], entry[ids[1]])
        if key in wanted:
            found.setdefault(key, []).append(entry)
    for parent in parents:
        parent[name] = found.get((parent[ids[0]], parent[ids[1]]), [])


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


def _last_per_key(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key in a statement (PostgreSQL refuses to update a row twice in one INSERT … ON
    CONFLICT): the newest snapshot of an object copied twice in one group wins."""
    keys = [c.name for c in table.primary_key.columns]
    newest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = tuple(row[k] for k in keys)
        if key not in newest or row.get("snapshot_at", 0) >= newest[key].get("snapshot_at", 0):
            newest[key] = row
    return list(newest.values())


def _upsert_in_one_transaction(engine: Engine, by_table: Mapping[str, list[dict[str, Any]]]) -> None:
    """On SQLite's writer thread."""
    with engine.begin() as conn:
        _upsert_all(conn, by_table)


def _upsert_all(conn: Connection, by_table: Mapping[str, list[dict[str, Any]]]) -> None:
    for name, rows in by_table.items():
        if rows:  # an empty executemany would be sent as one row of defaults
            table = metadata.tables[name]
            _upsert(conn, table, _last_per_key(table, rows))


def _upsert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """One statement for all rows (an executemany), built once per dialect and table."""
    conn.execute(_upsert_statement(conn.dialect.name, table.name), rows)


@functools.cache
def _upsert_statement(dialect: str, table_name: str) -> Any:
    table = metadata.tables[table_name]
    # untyped in the lowest SQLAlchemy pyproject allows, typed in newer ones: both are supported
    statement = pg_insert(table) if dialect == "postgresql" else sqlite_insert(table)  # type: ignore[no-untyped-call, unused-ignore]
    keys = [c.name for c in table.primary_key.columns]
    updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    newer = table.c.snapshot_at <= statement.excluded.snapshot_at if table.name in SNAPSHOT_TABLES else None
    return statement.on_conflict_do_update(index_elements=keys, set_=updates, where=newer)


def moment(epoch: float | str | None) -> datetime | None:
    """An epoch (as Redis keeps it) as an aware UTC datetime."""
    return None if epoch is None or epoch == "" else datetime.fromtimestamp(float(epoch), UTC)
