"""Alembic's environment for the catalog: run by ``vidpipe.catalog.migrate`` on the connection it hands
over (``config.attributes["connection"]``), never from an ``alembic.ini``."""

from alembic import context

from vidpipe.catalog.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
