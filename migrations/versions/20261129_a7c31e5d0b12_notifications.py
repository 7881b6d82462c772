"""notifications: increasing alert event ids, escalation and overdue marks, webhooks

Revision ID: a7c31e5d0b12
Revises: f2e9b931caa9
Create Date: 2026-11-29 15:15:53.006140
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import api.db

revision: str = "a7c31e5d0b12"
down_revision: str | None = "f2e9b931caa9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EVENT_COLUMNS = (
    "alert_id, at, action, actor_sub, actor_role, report_id, severity, from_status, to_status, note"
)


def _event_columns() -> list[sa.Column]:
    return [
        sa.Column("alert_id", sa.Uuid(), nullable=False),
        sa.Column("at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("actor_sub", sa.String(length=200), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=True),
        sa.Column("report_id", sa.Uuid(), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=True),
        sa.Column("from_status", sa.String(length=16), nullable=True),
        sa.Column("to_status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alerts.id"], name=op.f("fk_alert_events_alert_id_alerts")
        ),
        sa.ForeignKeyConstraint(
            ["report_id"], ["reports.id"], name=op.f("fk_alert_events_report_id_reports")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert_events")),
    ]


def _set_aside_alert_events() -> None:
    """Rename alert_events out of the way (its id type changes: copied, not altered)."""
    op.drop_index("ix_alert_events_alert", table_name="alert_events")
    op.drop_index("ix_alert_events_report", table_name="alert_events")
    op.rename_table("alert_events", "alert_events_old")
    if op.get_bind().dialect.name == "postgresql":
        # Primary-key names are index names, unique per schema.
        op.execute(
            "ALTER TABLE alert_events_old RENAME CONSTRAINT pk_alert_events TO pk_alert_events_old"
        )


def _finish_alert_events(index_columns: list[str]) -> None:
    op.drop_table("alert_events_old")
    op.create_index("ix_alert_events_alert", "alert_events", index_columns, unique=False)
    op.create_index("ix_alert_events_report", "alert_events", ["report_id"], unique=False)


def upgrade() -> None:
    # Events get increasing integer ids; existing events are numbered in the order they happened.
    _set_aside_alert_events()
    op.create_table(
        "alert_events",
        sa.Column("id", BIGID, sa.Identity(always=False), nullable=False),
        *_event_columns(),
        sqlite_autoincrement=True,
    )
    # Column names are constants of this file.
    copy = (
        f"INSERT INTO alert_events ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM alert_events_old"  # noqa: S608
    )
    op.execute(copy + " ORDER BY at, id")
    _finish_alert_events(["alert_id", "id"])

    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("escalated_at", api.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("escalation_rank", sa.SmallInteger(), server_default="1", nullable=False)
        )
        batch_op.add_column(
            sa.Column("overdue_at", api.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.drop_index("ix_alerts_team_triage")
        batch_op.create_index(
            "ix_alerts_team_triage",
            ["care_team", "triage_rank", "escalation_rank", "follow_up_due_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_alerts_ack_watch",
            ["created_at"],
            unique=False,
            postgresql_where=sa.text("status = 'open' AND escalated_at IS NULL"),
            sqlite_where=sa.text("status = 'open' AND escalated_at IS NULL"),
        )
        batch_op.create_index(
            "ix_alerts_due_watch",
            ["follow_up_due_at"],
            unique=False,
            postgresql_where=sa.text("status IN ('open', 'acknowledged') AND overdue_at IS NULL"),
            sqlite_where=sa.text("status IN ('open', 'acknowledged') AND overdue_at IS NULL"),
        )

    op.create_table(
        "webhooks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("teams", JSON, nullable=True),
        sa.Column("secret", sa.String(length=200), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("deleted_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_event_id", BIGID, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BIGID, sa.Identity(always=False), nullable=False),
        sa.Column("webhook_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", BIGID, nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("leased_by", sa.String(length=100), nullable=True),
        sa.Column("leased_until", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", api.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["alert_events.id"],
            name=op.f("fk_webhook_deliveries_event_id_alert_events"),
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhooks.id"], name=op.f("fk_webhook_deliveries_webhook_id_webhooks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "uq_webhook_deliveries_event",
        "webhook_deliveries",
        ["webhook_id", "event_id"],
        unique=True,
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", BIGID, sa.Identity(always=False), nullable=False),
        sa.Column("webhook_id", sa.Uuid(), nullable=False),
        sa.Column("delivery_id", BIGID, nullable=False),
        sa.Column("event_id", BIGID, nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", api.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["webhook_deliveries.id"],
            name=op.f("fk_webhook_attempts_delivery_id_webhook_deliveries"),
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"], ["webhooks.id"], name=op.f("fk_webhook_attempts_webhook_id_webhooks")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_attempts")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_webhook_attempts_webhook", "webhook_attempts", ["webhook_id", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_attempts_webhook", table_name="webhook_attempts")
    op.drop_table("webhook_attempts")
    op.drop_index("uq_webhook_deliveries_event", table_name="webhook_deliveries")
    op.drop_index(
        "ix_webhook_deliveries_due",
        table_name="webhook_deliveries",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")

    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_alerts_due_watch",
            postgresql_where=sa.text("status IN ('open', 'acknowledged') AND overdue_at IS NULL"),
            sqlite_where=sa.text("status IN ('open', 'acknowledged') AND overdue_at IS NULL"),
        )
        batch_op.drop_index(
            "ix_alerts_ack_watch",
            postgresql_where=sa.text("status = 'open' AND escalated_at IS NULL"),
            sqlite_where=sa.text("status = 'open' AND escalated_at IS NULL"),
        )
        batch_op.drop_index("ix_alerts_team_triage")
        batch_op.create_index(
            "ix_alerts_team_triage",
            ["care_team", "triage_rank", "follow_up_due_at", "id"],
            unique=False,
        )
        batch_op.drop_column("overdue_at")
        batch_op.drop_column("escalation_rank")
        batch_op.drop_column("escalated_at")

    # Back to UUID ids: new random ones (the order lives on in ``at``).
    _set_aside_alert_events()
    op.create_table("alert_events", sa.Column("id", sa.Uuid(), nullable=False), *_event_columns())
    new_uuid = (
        "gen_random_uuid()"
        if op.get_bind().dialect.name == "postgresql"
        else "lower(hex(randomblob(16)))"
    )
    copy = f"INSERT INTO alert_events (id, {EVENT_COLUMNS}) SELECT {new_uuid}, {EVENT_COLUMNS}"
    op.execute(copy + " FROM alert_events_old")
    _finish_alert_events(["alert_id", "at"])
