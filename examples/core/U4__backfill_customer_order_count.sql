ALTER TABLE customers DROP COLUMN order_count;
