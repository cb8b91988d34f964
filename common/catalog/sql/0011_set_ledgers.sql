-- Each migration set names the ledger table it keeps in a target (Flyway's `table`,
-- golang-migrate's `x-migrations-table`), so one target can carry several sets whose version
-- numbers overlap. Existing sets keep the table their targets already have: no target changes.
-- Lowercase, so the name means the same quoted or not; 'pg_' is PostgreSQL's.
ALTER TABLE migration_sets
    ADD COLUMN ledger_table text NOT NULL DEFAULT 'tenantflow_schema_history'
        CONSTRAINT migration_sets_ledger_table_identifier
        CHECK (ledger_table ~ '^[a-z_][a-z0-9_]{0,62}$' AND ledger_table NOT LIKE 'pg\_%');
