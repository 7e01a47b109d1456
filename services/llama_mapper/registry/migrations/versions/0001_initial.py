"""Initial registry schema, with the append-only guard on the history table."""

# Revision ID: 0001
# Revises:
# Create Date: 2026-11-25

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)

_PG_GUARD = """
CREATE FUNCTION history_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'registry history is append-only: % refused', TG_OP;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER history_no_update_delete BEFORE UPDATE OR DELETE ON history
    FOR EACH ROW EXECUTE FUNCTION history_append_only();
CREATE TRIGGER history_no_truncate BEFORE TRUNCATE ON history
    FOR EACH STATEMENT EXECUTE FUNCTION history_append_only();
"""
_SQLITE_GUARD = (
    "CREATE TRIGGER history_no_update BEFORE UPDATE ON history "
    "BEGIN SELECT RAISE(ABORT, 'registry history is append-only: UPDATE refused'); END",
    "CREATE TRIGGER history_no_delete BEFORE DELETE ON history "
    "BEGIN SELECT RAISE(ABORT, 'registry history is append-only: DELETE refused'); END",
)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("last_version", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(256), nullable=True),
        sa.Column("display_name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("base_model_id", sa.String(512), nullable=False),
        sa.Column("base_model_revision", sa.String(128), nullable=False),
        sa.Column("base_model_sha256", sa.String(64), nullable=False),
        sa.Column("training_config_json", sa.Text, nullable=False),
        sa.Column("dataset_name", sa.String(256), nullable=False),
        sa.Column("dataset_manifest_sha256", sa.String(64), nullable=False),
        sa.Column("validation_report_sha256", sa.String(64), nullable=False),
        sa.Column("ray_submission_id", sa.String(256), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=False),
        sa.Column("artifact_key", sa.String(512), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("lora_rank", sa.Integer, nullable=False),
        sa.Column("target_modules", sa.JSON, nullable=False),
        sa.Column("temperature", sa.Float, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("deleted_at", TS, nullable=True),
        sa.Column("deleted_by", sa.String(256), nullable=False),
        sa.Column("delete_reason", sa.Text, nullable=False),
        sa.UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
        sa.UniqueConstraint(
            "model_id", "idempotency_key", name="uq_versions_model_idempotency_key"
        ),
    )
    op.create_table(
        "base_models",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("base_model_id", sa.String(512), nullable=False),
        sa.Column("revision", sa.String(128), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("base_model_id", "revision", name="uq_base_models_id_revision"),
    )
    op.create_table(
        "aliases",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("model_id", "name", name="uq_aliases_model_name"),
    )
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("values", sa.JSON, nullable=False),
        sa.Column("eval_set_sha256", sa.String(64), nullable=False),
        sa.Column("temperature", sa.Float, nullable=True),
        sa.Column("report_uri", sa.Text, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("recorded_by", sa.String(256), nullable=False),
    )
    op.create_index("ix_metrics_version_id", "metrics", ["version_id"])
    op.create_table(
        "benchmarks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("hardware_profile", sa.String(64), nullable=False),
        sa.Column("values", sa.JSON, nullable=False),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("recorded_by", sa.String(256), nullable=False),
    )
    op.create_index("ix_benchmarks_version_id", "benchmarks", ["version_id"])
    op.create_table(
        "targets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("hardware_profile", sa.String(64), nullable=False),
        sa.Column("p95_latency_ms", sa.Float, nullable=True),
        sa.Column("min_accuracy", sa.Float, nullable=True),
        sa.Column("min_macro_f1", sa.Float, nullable=True),
        sa.Column("max_ece", sa.Float, nullable=True),
        sa.Column("min_schema_valid_rate", sa.Float, nullable=True),
        sa.Column("max_error_rate", sa.Float, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        sa.UniqueConstraint("model_id", "hardware_profile", name="uq_targets_model_profile"),
    )
    op.create_table(
        "gate_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("versions.id"), nullable=False),
        sa.Column("hardware_profile", sa.String(64), nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("details_json", sa.Text, nullable=False),
        sa.Column("report_uri", sa.Text, nullable=False),
        sa.Column("recorded_at", TS, nullable=False),
        sa.Column("recorded_by", sa.String(256), nullable=False),
    )
    op.create_index("ix_gate_results_version_id", "gate_results", ["version_id"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False, unique=True),
        sa.Column("control_version", sa.Integer, nullable=False),
        sa.Column("treatment_version", sa.Integer, nullable=False),
        sa.Column("treatment_weight", sa.Float, nullable=False),
        sa.Column("stage", sa.String(32), nullable=False),
        sa.Column("shadow", sa.Boolean, nullable=False),
        sa.Column("shadow_fraction", sa.Float, nullable=False),
        sa.Column("salt", sa.String(64), nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "history",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("from_value", sa.Text, nullable=False),
        sa.Column("to_value", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
    )
    op.create_index("ix_history_model_id_id", "history", ["model_id", "id"])

    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(_PG_GUARD)
    elif dialect == "sqlite":
        for statement in _SQLITE_GUARD:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS history_no_truncate ON history")
        op.execute("DROP TRIGGER IF EXISTS history_no_update_delete ON history")
        op.execute("DROP FUNCTION IF EXISTS history_append_only()")
    for table in (
        "history",
        "rollouts",
        "gate_results",
        "targets",
        "benchmarks",
        "metrics",
        "aliases",
        "base_models",
        "versions",
        "models",
    ):
        op.drop_table(table)
