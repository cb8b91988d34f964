-- A data backfill: add the column with a default, fill it from orders, then make it strict.
ALTER TABLE customers ADD COLUMN order_count integer;

UPDATE customers c
   SET order_count = (SELECT count(*) FROM orders o WHERE o.customer_id = c.id);

ALTER TABLE customers ALTER COLUMN order_count SET DEFAULT 0;
ALTER TABLE customers ALTER COLUMN order_count SET NOT NULL;
