-- Template databases for the provisioning fast path: a database kept at a set of assigned
-- versions on one server, copied with CREATE DATABASE ... TEMPLATE. ``key`` hashes the server and
-- every set's resolved version and checksums, so a changed set or assignment never reuses a
-- stale template: it needs a new one, built while tenants take the slow path.
CREATE TABLE tenant_templates (
    key           text        PRIMARY KEY,
    server_id     uuid        NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    database_name text        NOT NULL,
    sets          jsonb       NOT NULL,
    status        text        NOT NULL CHECK (status IN ('building', 'ready', 'failed', 'retired')),
    run_id        text        NOT NULL,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX tenant_templates_server ON tenant_templates (server_id, status);

-- The template a tenant's database was copied from (NULL: created empty and migrated).
ALTER TABLE tenants ADD COLUMN template text;
