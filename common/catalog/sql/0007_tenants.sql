-- Tenants: what provisioning made (role, database or schema, target) and where it stands.
-- password_encrypted holds a generated password only while it is on its way to the tenant's
-- target row (provisioning, rotation); the target row is where it lives afterwards.
CREATE TABLE tenants (
    tenant_id           text        PRIMARY KEY,
    status              text        NOT NULL CHECK (
        status IN ('provisioning', 'active', 'failed', 'deprovisioning', 'deprovisioned')
    ),
    mode                text        NOT NULL CHECK (mode IN ('database', 'schema')),
    server_id           uuid        REFERENCES servers (id) ON DELETE SET NULL,
    database_id         uuid        REFERENCES databases (id) ON DELETE SET NULL,
    role_name           text        NOT NULL,
    database_name       text        NOT NULL,
    schema_name         text,
    sets                jsonb,
    labels              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    versions            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    request_hash        text        NOT NULL,
    run_id              text        NOT NULL,
    error               text,
    password_encrypted  text,
    password_key_id     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX tenants_status ON tenants (status);
CREATE INDEX tenants_server ON tenants (server_id);
