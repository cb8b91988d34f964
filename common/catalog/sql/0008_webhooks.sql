-- Outgoing webhook endpoints. The signing secret is stored only encrypted (AES-256-GCM, key id
-- alongside for rotation); it is shown once, when the endpoint is created.
CREATE TABLE webhook_endpoints (
    id               uuid        PRIMARY KEY,
    url              text        NOT NULL,
    description      text        NOT NULL DEFAULT '',
    event_types      text[]      NOT NULL,
    enabled          boolean     NOT NULL DEFAULT true,
    disabled_reason  text,
    secret_encrypted text        NOT NULL,
    secret_key_id    text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_endpoints_event_types ON webhook_endpoints USING gin (event_types);
