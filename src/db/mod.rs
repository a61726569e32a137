//! Postgres: pool, migrations, lease, queries.
