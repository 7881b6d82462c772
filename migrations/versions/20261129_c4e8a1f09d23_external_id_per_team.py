"""external_id unique per care team, not across the service

A clinician registering a patient learnt from a 409 that another team already holds that
external_id (a medical record number). Unique per team, a 409 only ever concerns the caller's
own team. Downgrading fails if two teams now hold the same external_id.

Revision ID: c4e8a1f09d23
Revises: a7c31e5d0b12
Create Date: 2026-11-29 15:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c4e8a1f09d23"
down_revision: str | None = "a7c31e5d0b12"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_patients_external_id"), type_="unique")
        batch_op.create_unique_constraint(
            batch_op.f("uq_patients_care_team_external_id"), ["care_team", "external_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_patients_care_team_external_id"), type_="unique")
        batch_op.create_unique_constraint(batch_op.f("uq_patients_external_id"), ["external_id"])
