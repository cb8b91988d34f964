#!/usr/bin/env bash
# Creates the roles and databases of the compose stack. The postgres image runs every script in
# /docker-entrypoint-initdb.d once, when the data volume is empty; later changes to the passwords
# in the env file need `ALTER ROLE ... PASSWORD` by hand (or `docker compose down -v`, which
# deletes every database).
#
#   tenantflow           catalog database of tenantflow (gateway and worker), owned by tenantflow
#   temporal             Temporal persistence, owned by temporal
#   temporal_visibility  Temporal visibility store, owned by temporal
#   keycloak             Keycloak, owned by keycloak
set -eo pipefail

for var in TENANTFLOW_DB_PASSWORD TEMPORAL_DB_PASSWORD KEYCLOAK_DB_PASSWORD; do
    if [ -z "${!var}" ]; then
        echo "init: $var is not set" >&2
        exit 1
    fi
done

# psql quotes the :'...' variables itself, so passwords never go through shell or SQL splicing.
psql --no-psqlrc -v ON_ERROR_STOP=1 \
    --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
    -v tenantflow_password="$TENANTFLOW_DB_PASSWORD" \
    -v temporal_password="$TEMPORAL_DB_PASSWORD" \
    -v keycloak_password="$KEYCLOAK_DB_PASSWORD" <<'SQL'
CREATE ROLE tenantflow LOGIN PASSWORD :'tenantflow_password';
CREATE ROLE temporal LOGIN PASSWORD :'temporal_password';
CREATE ROLE keycloak LOGIN PASSWORD :'keycloak_password';

CREATE DATABASE tenantflow OWNER tenantflow;
CREATE DATABASE temporal OWNER temporal;
CREATE DATABASE temporal_visibility OWNER temporal;
CREATE DATABASE keycloak OWNER keycloak;

-- Nobody but the owner (and the superuser) connects to each database.
REVOKE CONNECT, TEMPORARY ON DATABASE tenantflow, temporal, temporal_visibility, keycloak FROM PUBLIC;
SQL
