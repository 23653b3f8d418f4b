"""The archive's tables (SQLAlchemy Core). Rows are keyed by the platform's own ids, so archiving
the same thing again replaces it: a crash and a retry never archive anything twice. A chat's or task
order's own row carries ``snapshot_at`` (when its state was read from Redis): an older copy written
late never replaces a newer one."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Float, Integer, MetaData, String, Table, Text

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
    Column("deadline_basis", String(32), nullable=False, server_default=""),
    Column("snapshot_at", BigInteger, nullable=False, server_default="0"),
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

task_comments = Table(
    "task_comments",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("task_id", String(128), primary_key=True),
    Column("comment_id", String(255), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("side", String(32), nullable=False),
    Column("author", Text, nullable=False),
    Column("author_id", String(128), nullable=False),
    Column("text", Text, nullable=False),
)

task_evidence = Table(
    "task_evidence",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("task_id", String(128), primary_key=True),
    Column("action_id", String(255), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("name", Text, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),
)

chats = Table(
    "chats",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("conversation_id", String(128), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("order_id", String(128), nullable=False),
    Column("platform_agent", Text, nullable=False),
    Column("assignee", String(128), nullable=False),
    Column("opened_at", DateTime(timezone=True), nullable=False),
    Column("first_reply_at", DateTime(timezone=True)),
    Column("first_reply_by", String(128), nullable=False),
    Column("first_reply_seconds", Float),
    Column("replies", Integer, nullable=False),
    Column("late_replies", Integer, nullable=False),
    Column("closed_at", DateTime(timezone=True)),
    Column("close_reason", String(64), nullable=False),
    Column("ticket", String(128), nullable=False),
    Column("in_window", Boolean, nullable=False),
    Column("handled_elsewhere_by", String(128), nullable=False),
    Column("snapshot_at", BigInteger, nullable=False),
)

chat_messages = Table(
    "chat_messages",
    metadata,
    Column("store_id", String(64), primary_key=True),
    Column("conversation_id", String(128), primary_key=True),
    Column("message_id", String(255), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("author", Text, nullable=False),
    Column("author_id", String(128), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("text", Text, nullable=False),
)

SNAPSHOT_TABLES = {"task_orders", "chats"}
"""Tables whose rows are a whole object's state at one moment (guarded by ``snapshot_at``)."""
