"""The archive's tables (SQLAlchemy Core). Rows are keyed by the platform's own ids, so archiving
the same thing again replaces it: a crash and a retry never archive anything twice."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Integer, MetaData, String, Table, Text

metadata = MetaData()

task_orders = Table(
    "task_orders",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("task_id", String(128), primary_key=True),
    Column("creator_id", String(128), nullable=False),
    Column("issue_type", Text, nullable=False),
    Column("order_id", String(128), nullable=False),
    Column("status", String(32), nullable=False),
    Column("result", String(32), nullable=False),
    Column("solution", Text, nullable=False),
    Column("processed_by", Text, nullable=False),
    Column("processed_by_id", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("deadline_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("comments_merchant", Integer, nullable=False),
    Column("comments_creator", Integer, nullable=False),
    Column("data", JSON, nullable=False),
)

task_log = Table(
    "task_log",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("task_id", String(128), primary_key=True),
    Column("entry_id", String(255), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("type", String(64), nullable=False),
    Column("side", String(32), nullable=False),
    Column("operator", Text, nullable=False),
    Column("operator_id", String(128)),
)
