-- A data backfill: add the column with a default (instant, no table rewrite), fill it from
-- orders for the customers that exist, then make it strict.
ALTER TABLE customers ADD COLUMN order_count integer DEFAULT 0;

UPDATE customers c
   SET order_count = (SELECT count(*) FROM orders o WHERE o.customer_id = c.id);

ALTER TABLE customers ALTER COLUMN order_count SET NOT NULL;
