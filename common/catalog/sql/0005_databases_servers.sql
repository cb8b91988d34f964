-- A target may live on a registered server (provisioned there, or registered with `server`);
-- a server cannot be deleted while targets reference it. sslmode NULL means asyncpg's default.
ALTER TABLE databases
    ADD COLUMN server_id uuid REFERENCES servers (id) ON DELETE RESTRICT,
    ADD COLUMN sslmode text CHECK (
        sslmode IN ('disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full')
    );

CREATE INDEX databases_server_id ON databases (server_id);
