"""Chats and their messages; task orders' comments, evidence and how their deadline was set."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("task_orders", sa.Column("deadline_basis", sa.String(32), nullable=False, server_default=""))
    op.add_column("task_orders", sa.Column("snapshot_at", sa.BigInteger, nullable=False, server_default="0"))
    op.create_index("task_orders_by_creator", "task_orders", ["creator_id", "created_at"])
    op.create_table(
        "task_comments",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(128), primary_key=True),
        sa.Column("comment_id", sa.String(255), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("side", sa.String(32), nullable=False),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("author_id", sa.String(128), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "task_evidence",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(128), primary_key=True),
        sa.Column("action_id", sa.String(255), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "chats",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("platform_agent", sa.Text, nullable=False),
        sa.Column("assignee", sa.String(128), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_reply_at", sa.DateTime(timezone=True)),
        sa.Column("first_reply_by", sa.String(128), nullable=False),
        sa.Column("first_reply_seconds", sa.Float),
        sa.Column("replies", sa.Integer, nullable=False),
        sa.Column("late_replies", sa.Integer, nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True)),
        sa.Column("close_reason", sa.String(64), nullable=False),
        sa.Column("ticket", sa.String(128), nullable=False),
        sa.Column("in_window", sa.Boolean, nullable=False),
        sa.Column("handled_elsewhere_by", sa.String(128), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger, nullable=False),
    )
    op.create_index("chats_by_opened", "chats", ["store_id", "opened_at"])
    op.create_table(
        "chat_messages",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("conversation_id", sa.String(128), primary_key=True),
        sa.Column("message_id", sa.String(255), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("author", sa.Text, nullable=False),
        sa.Column("author_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("chat_messages")
    op.drop_index("chats_by_opened", "chats")
    op.drop_table("chats")
    op.drop_table("task_evidence")
    op.drop_table("task_comments")
    op.drop_index("task_orders_by_creator", "task_orders")
    op.drop_column("task_orders", "snapshot_at")
    op.drop_column("task_orders", "deadline_basis")
