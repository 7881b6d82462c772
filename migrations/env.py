from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from api.catalog.sync import sync_shipped_catalog
from api.db import make_engine
from api.models import Base
from api.settings import DatabaseSettings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _upgraded_to_head() -> bool:
    migration_context = context.get_context()
    # Only `alembic upgrade` syncs the catalog; check, revision and downgrade never write it.
    is_upgrade = getattr(migration_context.opts.get("fn"), "__name__", "") == "upgrade"
    heads = set(context.script.get_heads())  # type: ignore[attr-defined]
    return is_upgrade and bool(heads) and set(migration_context.get_current_heads()) == heads


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(DatabaseSettings())
    # One transaction for the schema and the catalog: a failed sync leaves no half upgrade.
    with engine.begin() as connection:
        _run(connection)
    engine.dispose()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        # After every upgrade that reaches head, the shipped catalog (symptoms, drugs, rules)
        # is brought into the database: deploying is `alembic upgrade head`, nothing more.
        if _upgraded_to_head():
            sync_shipped_catalog(connection)


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
