-- The product catalogue and the lines of an order (one line per product).
CREATE TABLE products (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku         text   NOT NULL UNIQUE,
    price_cents bigint NOT NULL CHECK (price_cents >= 0)
);

CREATE TABLE order_items (
    order_id    bigint  NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id  bigint  NOT NULL REFERENCES products (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    price_cents bigint  NOT NULL CHECK (price_cents >= 0),
    PRIMARY KEY (order_id, product_id)
);

CREATE INDEX order_items_product ON order_items (product_id);
