#!/bin/sh
# The service's own role: it owns its database (so the migrations may create
# tables, the trusted extension pg_trgm and the database's settings) but is
# not a superuser, so it cannot take the connections PostgreSQL keeps for
# administrators (superuser_reserved_connections) nor touch other databases.
#
# The postgres image runs the files in /docker-entrypoint-initdb.d once, when
# its data volume is new, as the superuser POSTGRES_USER over the local
# socket. docker-compose.yml mounts this directory there; tests/server/
# test_container_files.py runs this file the same way against a real server.
set -eu

: "${APP_DB_USER:?the service role's name}"
: "${APP_DB_PASSWORD:?the service role's password}"
: "${APP_DB_NAME:?the service database's name}"

# psql variables (:"name" quotes an identifier, :'name' a literal) keep the
# values out of the SQL text and out of shell quoting.
psql --no-psqlrc --set ON_ERROR_STOP=1 \
  --username "${POSTGRES_USER:-postgres}" --dbname postgres \
  --set app_user="$APP_DB_USER" \
  --set app_password="$APP_DB_PASSWORD" \
  --set app_db="$APP_DB_NAME" <<'SQL'
CREATE ROLE :"app_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION
  PASSWORD :'app_password';
CREATE DATABASE :"app_db" OWNER :"app_user";
-- Only the owner (and superusers) may connect to it.
REVOKE ALL ON DATABASE :"app_db" FROM PUBLIC;
\connect :"app_db"
-- PostgreSQL 15+ lets the database's owner create in public already; older
-- versions need the schema to be the owner's.
ALTER SCHEMA public OWNER TO :"app_user";
SQL
