-- Flyway's repeatable migrations (R__<description>.sql) join a set as rows whose version is
-- 'R:<description>': no number, an empty sort key, and content that a later upload may replace
-- (that is how a repeatable evolves; versioned rows stay immutable). dbmate's separate
-- transaction flag for a down section (and a Flyway undo script's own .sql.conf) is
-- down_no_transaction: NULL means "as the up", which every existing row keeps.
ALTER TABLE migration_set_versions
    ADD COLUMN repeatable boolean NOT NULL DEFAULT false,
    ADD COLUMN down_no_transaction boolean,
    ADD CONSTRAINT migration_set_versions_repeatable_identity
        CHECK (repeatable = (version LIKE 'R:%')),
    ADD CONSTRAINT migration_set_versions_repeatable_without_down
        CHECK (NOT repeatable OR down_sql IS NULL);
