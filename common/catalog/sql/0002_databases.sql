-- Targets: one tenant database, or one schema inside a database (schema-per-tenant).
-- The password is stored only encrypted (AES-256-GCM, key id alongside for rotation).
CREATE TABLE databases (
    id                 uuid        PRIMARY KEY,
    name               text        NOT NULL UNIQUE,
    tenant_id          text,
    host               text        NOT NULL,
    port               integer     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    database           text        NOT NULL,
    schema             text,
    username           text        NOT NULL,
    password_encrypted text        NOT NULL,
    password_key_id    text        NOT NULL,
    labels             jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX databases_labels ON databases USING gin (labels jsonb_path_ops);
CREATE INDEX databases_tenant_id ON databases (tenant_id);
CREATE INDEX databases_key_id ON databases (password_key_id);
