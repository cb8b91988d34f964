-- The latest health snapshot per target, written by FleetHealthWorkflow. reported_* record what
-- the events last sent said, so an event goes out once per change, not once per sweep.
CREATE TABLE target_health (
    database_id        uuid        PRIMARY KEY REFERENCES databases (id) ON DELETE CASCADE,
    reachable          boolean     NOT NULL,
    error              text,
    latency_ms         double precision,
    server_version     text,
    ledger_version     text,
    sets               jsonb       NOT NULL DEFAULT '[]',
    behind_sets        text[]      NOT NULL DEFAULT '{}',
    fingerprint        text,
    objects            jsonb,
    drift              jsonb       NOT NULL DEFAULT '{}',
    drifted            boolean     NOT NULL DEFAULT false,
    checked_at         timestamptz NOT NULL DEFAULT now(),
    run_id             text,
    reported_reachable boolean     NOT NULL DEFAULT true,
    reported_drifted   boolean     NOT NULL DEFAULT false,
    events_sent        integer     NOT NULL DEFAULT 0
);

CREATE INDEX target_health_unreachable ON target_health (database_id) WHERE NOT reachable;
CREATE INDEX target_health_drifted ON target_health (database_id) WHERE drifted;
CREATE INDEX target_health_behind ON target_health (database_id) WHERE behind_sets <> '{}';

-- The reference fingerprint of a set replayed up to a version in a scratch database, built once;
-- chain is a hash of the checksums up to that version, so a changed set never reuses a stale one.
CREATE TABLE health_references (
    set_name    text        NOT NULL,
    version     text        NOT NULL,
    chain       text        NOT NULL,
    fingerprint text,
    objects     jsonb,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (set_name, version, chain)
);
