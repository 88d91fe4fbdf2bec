"""The cluster's Dagster instance reaches PostgreSQL through PgBouncer, which spares PostgreSQL a new
connection for every query (real PostgreSQL and PgBouncer on loopback)."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg2
import pytest

from vidpipe.cluster import instance_yaml
from vidpipe.loopback import PgBouncerServer, PostgresServer, start_pgbouncer, start_postgres

QUERIES = 60


@pytest.fixture(scope="module")
def pgbouncer(tmp_path_factory) -> Iterator[PgBouncerServer]:
    root = tmp_path_factory.mktemp("pg")
    postgres = start_postgres(root / "postgres", root / "postgres.log", durable=False)
    try:
        bouncer = start_pgbouncer(postgres, root / "pgbouncer", root / "pgbouncer.log")
        yield bouncer
        bouncer.stop()
    finally:
        postgres.stop()


def sessions(postgres: PostgresServer) -> int:
    """Connections PostgreSQL has accepted to its database since it started (this one included)."""
    address = {"host": "127.0.0.1", "port": postgres.port, "user": postgres.user, "dbname": postgres.database}
    with psycopg2.connect(**address) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        [(count,)] = cursor.fetchall()
    return count


def cluster_instance(home: Path, environment: dict[str, str], monkeypatch) -> dg.DagsterInstance:
    """The instance every process of the cluster opens, with the ``VIDPIPE_PG_*`` variables of ``environment``."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml())
    return dg.DagsterInstance.from_config(str(home))


def postgres_connections_for_queries(instance: dg.DagsterInstance, postgres: PostgresServer) -> int:
    """Connections PostgreSQL accepted while ``instance`` queried each of its storages ``QUERIES`` times."""
    before = sessions(postgres)
    for _ in range(QUERIES):
        instance.get_runs(limit=1)  # run storage
        assert instance.get_dynamic_partitions("videos") == ["clip-1"]  # event log storage
        instance.all_instigator_state()  # schedule storage
    return sessions(postgres) - before - 1


def test_the_instance_queries_through_pgbouncer_on_connections_postgres_keeps(pgbouncer, tmp_path, monkeypatch):
    postgres = pgbouncer.postgres
    instance = cluster_instance(tmp_path / "pooled", pgbouncer.environment(), monkeypatch)
    instance.add_dynamic_partitions("videos", ["clip-1"])
    assert postgres_connections_for_queries(instance, postgres) <= 3

    # the webserver's own pool (it holds a connection and sets a statement timeout on it) works through it too
    instance.optimize_for_webserver(statement_timeout=15000, pool_recycle=3600, max_overflow=20)
    assert postgres_connections_for_queries(instance, postgres) <= 3

    # the same instance on PostgreSQL directly: a connection per query
    direct = cluster_instance(tmp_path / "direct", postgres.environment(), monkeypatch)
    assert postgres_connections_for_queries(direct, postgres) >= 3 * QUERIES
