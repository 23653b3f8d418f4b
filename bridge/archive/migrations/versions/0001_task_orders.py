"""Task orders and their processing log."""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_orders",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(128), primary_key=True),
        sa.Column("creator_id", sa.String(128), nullable=False),
        sa.Column("issue_type", sa.Text, nullable=False),
        sa.Column("order_id", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("result", sa.String(32), nullable=False),
        sa.Column("solution", sa.Text, nullable=False),
        sa.Column("processed_by", sa.Text, nullable=False),
        sa.Column("processed_by_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("comments_merchant", sa.Integer, nullable=False),
        sa.Column("comments_creator", sa.Integer, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("task_orders_by_status", "task_orders", ["store_id", "status", "created_at"])
    op.create_table(
        "task_log",
        sa.Column("store_id", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(128), primary_key=True),
        sa.Column("entry_id", sa.String(255), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("side", sa.String(32), nullable=False),
        sa.Column("operator", sa.Text, nullable=False),
        sa.Column("operator_id", sa.String(128)),
    )


def downgrade() -> None:
    op.drop_table("task_log")
    op.drop_index("task_orders_by_status", "task_orders")
    op.drop_table("task_orders")
