-- Runs once, when the PostgreSQL data directory is created (docker-entrypoint-initdb.d), as the
-- bootstrap user POSTGRES_USER (`obliviate`), which owns the database and every table that
-- `obliviate db upgrade` creates. The API, workers and beat log in as `obliviate_service`
-- instead: it owns nothing, so it cannot drop or disable the audit triggers, and the migrations
-- grant it row access only (OBLIVIATE_DB_SERVICE_ROLE, app/migrate.py).
--
-- On an existing database run the same statements by hand as a superuser, with
--   psql -v service_password="$OBLIVIATE_DB_SERVICE_PASSWORD" -f deploy/postgres-init.sql
\if :{?service_password}
\else
  \getenv service_password OBLIVIATE_DB_SERVICE_PASSWORD
\endif
\if :{?service_password}
\else
  DO $$ BEGIN RAISE EXCEPTION 'OBLIVIATE_DB_SERVICE_PASSWORD is not set'; END $$;
\endif

CREATE ROLE obliviate_service LOGIN PASSWORD :'service_password'
  NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
GRANT CONNECT ON DATABASE obliviate TO obliviate_service;
-- No objects of its own: nothing it could create would be trusted by the application anyway.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
