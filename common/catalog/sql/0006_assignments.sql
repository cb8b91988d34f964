-- Set assignments: the desired state "targets whose labels contain the selector carry this set".
-- A NULL version means "latest": resolved when a run starts, because sets grow after assignment.
CREATE TABLE set_assignments (
    set_name   text        PRIMARY KEY REFERENCES migration_sets (name) ON DELETE CASCADE,
    selector   jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(selector) = 'object'),
    version    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
