"""operational facts: counters, upload outcomes per hour, backup rounds

Revision ID: 4929731de945
Revises: 230869a33c0f
Create Date: 2026-12-04 18:40:30.903333+00:00
"""

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op


sa.DateTimeUTC = DateTimeUTC  # autogenerate renders advanced-alchemy types as sa.<Name>

revision = "4929731de945"
down_revision = "230869a33c0f"
branch_labels = None
depends_on = None

# From here on the image service keeps these totals in the transactions that change them; this
# counts what is already there. HAVING: an empty database gets no rows (no row means zero), so a
# freshly migrated database still counts as empty for `backup restore`.
BACKFILL = (
    "INSERT INTO counters (name, value) SELECT 'images', COUNT(*) FROM images HAVING COUNT(*) > 0",
    # Stored bytes: every object an image still needs, each shared blob once (original + variants).
    "INSERT INTO counters (name, value)"
    " SELECT 'stored_bytes', SUM(size + thumbnail_size + preview_size) FROM blobs WHERE refcount > 0"
    " HAVING COUNT(*) > 0",
)


def upgrade() -> None:
    op.create_table(
        "backup_rounds",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(always=False, start=1, increment=1),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("backup_id", sa.String(length=32), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backup_rounds")),
    )
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_counters")),
    )
    op.create_table(
        "upload_outcomes",
        sa.Column("epoch_hour", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("epoch_hour", "outcome", name=op.f("pk_upload_outcomes")),
    )
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    op.drop_table("upload_outcomes")
    op.drop_table("counters")
    op.drop_table("backup_rounds")
