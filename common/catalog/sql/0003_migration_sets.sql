-- Registered migration sets: named, versioned, immutable (a version's SQL never changes).
CREATE TABLE migration_sets (
    name       text        PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE migration_set_versions (
    set_name       text        NOT NULL REFERENCES migration_sets (name),
    version        text        NOT NULL,
    -- Numeric sort key of the version ("1.10" -> {1,10}); versions order part by part.
    version_key    numeric[]   NOT NULL,
    description    text        NOT NULL,
    checksum       text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    up_sql         text        NOT NULL,
    down_sql       text,
    no_transaction boolean     NOT NULL DEFAULT false,
    source         text,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    -- A withdrawn version (e.g. one that fails everywhere) is no longer applied to targets
    -- that lack it; its content stays, so targets that have it still verify.
    withdrawn_at   timestamptz,
    PRIMARY KEY (set_name, version)
);

CREATE INDEX migration_set_versions_order ON migration_set_versions (set_name, version_key);
