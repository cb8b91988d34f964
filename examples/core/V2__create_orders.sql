-- Orders belong to a customer; deleting the customer deletes their orders.
CREATE TABLE orders (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id bigint      NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    placed_at   timestamptz NOT NULL DEFAULT now(),
    total_cents bigint      NOT NULL DEFAULT 0 CHECK (total_cents >= 0)
);

CREATE INDEX orders_customer_placed ON orders (customer_id, placed_at DESC);
