"""The archive behind one small interface: ``Archive.put_task`` (an upsert keyed by ids, so a retry
archives nothing twice) and ``Archive.tasks`` (what lists and exports read). SQLAlchemy 2 Core over
aiosqlite (the embedded default) or asyncpg (``postgresql://``); the schema is Alembic's, run by
``migrate`` — at start, and by ``bridge archive migrate``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bridge.archive.schema import task_log, task_orders

EMBEDDED_ARCHIVE = Path("var") / "archive.sqlite3"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def archive_url(environ: Mapping[str, str] | None = None) -> str:
    """``ARCHIVE_URL`` when set (``postgresql://…`` for several replicas), else the embedded SQLite file."""
    env = os.environ if environ is None else environ
    return env.get("ARCHIVE_URL") or f"sqlite:///{EMBEDDED_ARCHIVE}"


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
    """Brings the schema to the newest version (Alembic), creating the SQLite file's folder."""
    _, sync_url = _drivers(url)
    if sync_url.startswith("sqlite:///"):
        Path(sync_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(sync_url)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


class Archive:
    def __init__(self, url: str) -> None:
        async_url, _ = _drivers(url)
        self.url = url
        self.engine: AsyncEngine = create_async_engine(async_url)
        if async_url.startswith("sqlite"):
            event.listen(self.engine.sync_engine, "connect", _sqlite_wal)

    async def close(self) -> None:
        await self.engine.dispose()

    async def put_task(self, row: Mapping[str, Any], log: Sequence[Mapping[str, Any]]) -> None:
        """One finished task order and its whole log, in one transaction; again replaces it."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upsert, task_orders, [dict(row)], ("store_id", "task_id"))
            if log:
                await conn.run_sync(_upsert, task_log, [dict(e) for e in log], ("store_id", "task_id", "entry_id"))

    async def tasks(self, store_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """Archived task orders, newest first, each with its log."""
        query = select(task_orders).order_by(task_orders.c.created_at.desc())
        if store_id is not None:
            query = query.where(task_orders.c.store_id == store_id)
        if status is not None:
            query = query.where(task_orders.c.status == status)
        async with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in await conn.execute(query)]
            for row in rows:
                entries = await conn.execute(
                    select(task_log)
                    .where(task_log.c.store_id == row["store_id"], task_log.c.task_id == row["task_id"])
                    .order_by(task_log.c.seq)
                )
                row["log"] = [dict(e._mapping) for e in entries]
        return rows


def _upsert(conn: Connection, table: Any, rows: list[dict[str, Any]], keys: tuple[str, ...]) -> None:
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).values(rows)
    updates = {c.name: statement.excluded[c.name] for c in table.columns if c.name not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=updates))


def moment(epoch: float | str | None) -> datetime | None:
    """An epoch (as Redis keeps it) as an aware UTC datetime."""
    return datetime.fromtimestamp(float(epoch), UTC) if epoch not in (None, "") else None
