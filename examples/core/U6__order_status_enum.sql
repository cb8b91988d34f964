DROP INDEX orders_open;
ALTER TABLE orders DROP COLUMN status;
DROP TYPE order_status;
