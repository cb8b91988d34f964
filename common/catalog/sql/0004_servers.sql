-- Servers: PostgreSQL servers tenantflow may create roles, databases and schemas on.
-- The admin password is stored only encrypted (AES-256-GCM, key id alongside for rotation).
CREATE TABLE servers (
    id                       uuid        PRIMARY KEY,
    name                     text        NOT NULL UNIQUE,
    host                     text        NOT NULL,
    port                     integer     NOT NULL CHECK (port BETWEEN 1 AND 65535),
    admin_user               text        NOT NULL,
    admin_password_encrypted text        NOT NULL,
    admin_password_key_id    text        NOT NULL,
    sslmode                  text        NOT NULL DEFAULT 'prefer' CHECK (
        sslmode IN ('disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full')
    ),
    maintenance_database     text        NOT NULL DEFAULT 'postgres',
    max_connections          integer     NOT NULL DEFAULT 20 CHECK (max_connections > 0),
    labels                   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX servers_labels ON servers USING gin (labels jsonb_path_ops);
CREATE INDEX servers_key_id ON servers (admin_password_key_id);
