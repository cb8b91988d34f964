-- An enum type, a column of it (existing orders become 'pending') and a partial index.
CREATE TYPE order_status AS ENUM ('pending', 'paid', 'shipped', 'cancelled');

ALTER TABLE orders ADD COLUMN status order_status NOT NULL DEFAULT 'pending';

CREATE INDEX orders_open ON orders (placed_at) WHERE status IN ('pending', 'paid');
